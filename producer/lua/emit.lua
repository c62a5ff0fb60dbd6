-- Append envelopes to one flow's queue and mark the flow as owed a drain.
-- KEYS[1] queue list, KEYS[2] parked flag, KEYS[3] pending zset
-- ARGV[1] flow id, ARGV[2] now (ms), ARGV[3..] envelopes in emission order
-- Returns 1 when the flow just became pending (the caller enqueues a drain job), else 0.
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0  -- parked: the events wait, in order, until an operator retries or discards
end
return redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1])
