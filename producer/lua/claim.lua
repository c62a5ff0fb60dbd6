-- A sweep's claim: reap expired leases, then lease up to K of the oldest ready flows under one
-- fencing token and return their first entries (at most B events and a byte budget in all;
-- the first flow always gets at least one entry, so no event is too big to move).
-- KEYS[1] ready, KEYS[2] leased, KEYS[3] leases, KEYS[4] removed, KEYS[5] sweeps
-- ARGV[1] base, ARGV[2] K, ARGV[3] B, ARGV[4] byte budget, ARGV[5] lease ttl (ms),
-- ARGV[6] token, ARGV[7] sweep id, ARGV[8] sweep ttl (ms)
-- Safe to replay: a claim with a token already used returns the same flows again (those
-- still leased under it), re-read; nothing more is leased.
-- Returns {now, reaped, {flow, removed, {entries}}, ...}.
local base = ARGV[1]
local k, b, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl, token = tonumber(ARGV[5]), ARGV[6]
local now = now_ms()
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), ARGV[7])  -- this sweep is alive
local claim_key = base .. 'claim:' .. token
local replay = redis.call('LRANGE', claim_key, 0, -1)
local flows, fresh = replay, false
local reaped = 0
if #replay == 0 then
  reaped = reap(base, now, 1000)
  flows, fresh = redis.call('ZRANGE', KEYS[1], 0, k - 1), true
end
local result = {now, reaped}
local events = 0
local taken = {}
for _, flow in ipairs(flows) do
  if events >= b or budget <= 0 then
    break
  end
  if fresh or redis.call('HGET', KEYS[3], flow) == token then
    local entries = redis.call('LRANGE', flow_key(base, flow, 'q'), 0, b - events - 1)
    local kept = {}
    for _, entry in ipairs(entries) do
      if #entry > budget and events > 0 then
        break
      end
      budget = budget - #entry
      events = events + 1
      kept[#kept + 1] = entry
    end
    if #kept > 0 then
      if fresh then
        redis.call('ZREM', KEYS[1], flow)
        redis.call('ZADD', KEYS[2], now + ttl, flow)
        redis.call('HSET', KEYS[3], flow, token)
        taken[#taken + 1] = flow
      end
      local removed = tonumber(redis.call('HGET', KEYS[4], flow) or 0)
      result[#result + 1] = {flow, removed, kept}
    elseif #entries == 0 and fresh then
      redis.call('ZREM', KEYS[1], flow)  -- nothing queued: not ready after all
    end
  end
end
if fresh and #taken > 0 then
  redis.call('RPUSH', claim_key, unpack(taken))
  redis.call('PEXPIRE', claim_key, ttl)
end
return result
