-- End a drain. Mode "empty": only if the queue is empty, clear the pending mark and the lock
-- (else the drain goes on: a producer pushed meanwhile). Mode "keep": drop the lock, leave the
-- flow pending (a later drain or reconcile takes over). Mode "parked": drop the lock and the
-- pending mark (a parked flow is resumed by the operator, not by reconcile).
-- KEYS[1] queue list, KEYS[2] lock, KEYS[3] pending zset
-- ARGV[1] owner token, ARGV[2] flow id, ARGV[3] mode
-- Returns 1 released, 0 queue not empty (mode "empty"), -1 lock not ours.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local mode = ARGV[3]
if mode == 'empty' then
  if redis.call('LLEN', KEYS[1]) > 0 then
    return 0
  end
  redis.call('ZREM', KEYS[3], ARGV[2])
elseif mode == 'parked' then
  redis.call('ZREM', KEYS[3], ARGV[2])
end
redis.call('DEL', KEYS[2])
return 1
