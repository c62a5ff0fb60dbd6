-- Append one flow's envelopes (consecutive positions, in order) and make the flow ready.
-- KEYS[1] ready, KEYS[2] leased, KEYS[3] sweeps, KEYS[4] wake   (shard keys, for the cluster)
-- ARGV[1] base, ARGV[2] flow, ARGV[3] position of the first envelope, ARGV[4] dedupe ttl (s),
-- ARGV[5] queued-sweep ttl (ms), ARGV[6] max sweeps, ARGV[7..] envelopes
-- Safe to replay: envelopes below the flow's "next position pushed" are not pushed again.
-- Returns a sweep job id to enqueue, or 0.
local base, flow = ARGV[1], ARGV[2]
local first, count = tonumber(ARGV[3]), #ARGV - 6
local next_key = flow_key(base, flow, 'next')
local pushed = tonumber(redis.call('GET', next_key) or first)
local skip = 0
if pushed > first then
  skip = math.min(count, pushed - first)
end
if skip == count then
  return 0  -- a replay: the first call pushed them all
end
redis.call('RPUSH', flow_key(base, flow, 'q'), unpack(ARGV, 7 + skip, #ARGV))
redis.call('SET', next_key, math.max(pushed, first + count), 'EX', ARGV[4])
local now = now_ms()
if make_ready(base, flow, now) == 0 then
  return 0  -- already ready (a sweep was told), leased (its ack re-readies it) or parked
end
return want_sweep(base, now, tonumber(ARGV[5]), tonumber(ARGV[6])) or 0
