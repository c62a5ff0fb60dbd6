-- Move the head entry of a flow's queue to its dead letters and park the flow, atomically,
-- only if the caller holds the lock and the head is still the entry it judged.
-- KEYS[1] queue, KEYS[2] lock, KEYS[3] dead letters, KEYS[4] parked flag,
-- KEYS[5] pending zset, KEYS[6] parked index zset
-- ARGV[1] owner token, ARGV[2] the head entry, ARGV[3] dead-letter record, ARGV[4] reason,
-- ARGV[5] flow id, ARGV[6] now (ms)
-- Returns 1 done, -1 lock not ours, -2 head changed (nothing changed in either case).
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[2] then
  return -2
end
redis.call('LPOP', KEYS[1])
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('SET', KEYS[4], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[6], ARGV[5])
redis.call('ZREM', KEYS[5], ARGV[5])
redis.call('DEL', KEYS[2])
return 1
