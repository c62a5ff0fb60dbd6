-- The periodic check of every worker: reap expired leases, re-ready orphans (flows with
-- queued events in no index, e.g. after an AOF rewind), and want a sweep if flows are ready.
-- KEYS[1] ready, KEYS[2] leased, KEYS[3] parked, KEYS[4] sweeps, KEYS[5] wake
-- ARGV[1] base, ARGV[2] queued-sweep ttl (ms), ARGV[3] max sweeps, ARGV[4..] orphan candidates
-- Safe to replay: it only moves flows to where they belong and registers at most one sweep.
-- Returns {reaped, orphans re-readied, sweep job id or 0}.
local base = ARGV[1]
local now = now_ms()
local reaped = reap(base, now, 10000)
local orphans = 0
for i = 4, #ARGV do
  local flow = ARGV[i]
  if not redis.call('ZSCORE', KEYS[1], flow) then
    orphans = orphans + make_ready(base, flow, now)
  end
end
local sweep = 0
if redis.call('ZCARD', KEYS[1]) > 0 then
  sweep = want_sweep(base, now, tonumber(ARGV[2]), tonumber(ARGV[3])) or 0
end
return {reaped, orphans, sweep}
