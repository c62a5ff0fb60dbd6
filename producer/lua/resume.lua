-- Operator: resume a parked flow. Retry puts the dead letters back among the queued events
-- (the caller sends the new head of the queue, ordered by position, built from what it read);
-- discard sends no entries. Checked against the dead letters' generation, not their number.
-- KEYS[1] ready, KEYS[2] leased, KEYS[3] parked, KEYS[4] sweeps, KEYS[5] wake
-- ARGV[1] base, ARGV[2] flow, ARGV[3] generation read, ARGV[4] queued entries read (replaced
-- by the new head), ARGV[5] queued-sweep ttl (ms), ARGV[6] max sweeps, ARGV[7] command id,
-- ARGV[8..] new head
-- Safe to replay: the first call bumps the generation and records its command id, so a
-- replay changes nothing and says so (-2).
-- Returns -1 (the dead letters changed: nothing done), -2 (this command was already done),
-- 0 (resumed, nothing queued), 1 (resumed, a sweep is running or queued) or a sweep job id.
local base, flow = ARGV[1], ARGV[2]
local gen_key = flow_key(base, flow, 'dlgen')
local op_key = flow_key(base, flow, 'dlop')
if (redis.call('GET', gen_key) or '0') ~= ARGV[3] then
  if redis.call('GET', op_key) == ARGV[7] then
    return -2
  end
  return -1
end
local queue = flow_key(base, flow, 'q')
local read = tonumber(ARGV[4])
if read > 0 then
  redis.call('LTRIM', queue, read, -1)  -- parked: producers only appended behind what was read
end
for i = #ARGV, 8, -1 do
  redis.call('LPUSH', queue, ARGV[i])
end
redis.call('DEL', flow_key(base, flow, 'dead'))
redis.call('INCR', gen_key)
redis.call('SET', op_key, ARGV[7], 'EX', 86400)
redis.call('DEL', flow_key(base, flow, 'reason'))
redis.call('ZREM', KEYS[3], flow)
local now = now_ms()
if redis.call('LLEN', queue) == 0 then
  return 0
end
make_ready(base, flow, now)
return want_sweep(base, now, tonumber(ARGV[5]), tonumber(ARGV[6])) or 1
