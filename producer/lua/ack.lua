-- Remove the first N entries of a flow's queue, only if the caller still holds the drain lock,
-- and extend the lock. N = 0 only renews the lock.
-- KEYS[1] queue list, KEYS[2] lock
-- ARGV[1] owner token, ARGV[2] N, ARGV[3] lock ttl (ms)
-- Returns 1, or 0 when the lock is no longer ours (nothing changed).
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
local n = tonumber(ARGV[2])
if n > 0 then
  redis.call('LTRIM', KEYS[1], n, -1)
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
