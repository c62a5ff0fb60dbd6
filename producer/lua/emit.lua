-- Append one flow's envelopes (in emission order) and make the flow ready.
-- KEYS[1] ready, KEYS[2] leased, KEYS[3] sweeps, KEYS[4] wake   (shard keys, for the cluster)
-- ARGV[1] base, ARGV[2] flow, ARGV[3] queued-sweep ttl (ms), ARGV[4] max sweeps,
-- ARGV[5..] envelopes
-- Safe to replay: the envelopes go in with one RPUSH, so if the queue's last entry is this
-- call's last envelope, the call already ran (the engine emits a flow's events one call at a
-- time). A replay that comes after a sweep took them pushes them again: the copies are
-- identical events at their own positions, which PostgreSQL's key turns into no-ops.
-- Returns a sweep job id to enqueue, or 0.
local base, flow = ARGV[1], ARGV[2]
local queue = flow_key(base, flow, 'q')
if redis.call('LINDEX', queue, -1) == ARGV[#ARGV] then
  return 0  -- a replay: the first call pushed them all
end
redis.call('RPUSH', queue, unpack(ARGV, 5, #ARGV))
local now = now_ms()
if make_ready(base, flow, now, true) == 0 then
  return 0  -- already ready (a sweep was told), leased (its ack re-readies it) or parked
end
return want_sweep(base, now, tonumber(ARGV[3]), tonumber(ARGV[4])) or 0
