-- Operator: resume a parked flow. Optionally put entries back at the head of its queue (retry),
-- then drop its dead letters, unpark it and mark it pending when it has anything queued.
-- KEYS[1] queue, KEYS[2] dead letters, KEYS[3] parked flag, KEYS[4] pending zset,
-- KEYS[5] parked index zset
-- ARGV[1] flow id, ARGV[2] now (ms), ARGV[3] number of dead letters the operator saw,
-- ARGV[4..] entries to put back at the head, in queue order (none for a discard)
-- Returns 1 when the flow is now pending (enqueue a drain), 0 when nothing is queued,
-- -1 when the dead letters changed since the operator read them (nothing changed).
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[3]) then
  return -1
end
for i = #ARGV, 4, -1 do
  redis.call('LPUSH', KEYS[1], ARGV[i])
end
redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[5], ARGV[1])
if redis.call('LLEN', KEYS[1]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[4], 'NX', ARGV[2], ARGV[1])
return 1
