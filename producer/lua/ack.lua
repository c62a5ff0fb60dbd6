-- A sweep's ack, once for the whole claim, after its PostgreSQL transaction committed: for each
-- flow still leased under the token, remove exactly the committed entries (checked against the
-- flow's count of removed entries, never "the first N" blindly), move a poison entry to the
-- dead letters and park the flow, then release the lease: empty -> idle, else back of the line.
-- With every count 0 it only releases (a sweep that could not store gives its flows back).
-- KEYS[1] ready, KEYS[2] leased, KEYS[3] leases, KEYS[4] removed, KEYS[5] parked, KEYS[6] wake
-- ARGV[1] base, ARGV[2] token, then 6 per flow: flow, removed as claimed, count to remove,
-- poison entry, dead-letter record (or "": no poison), park reason
-- Safe to replay: each flow's lease is consumed by the first call, so a replay changes nothing.
-- Returns {flows released, flows whose lease was lost, flows parked}.
local base, token = ARGV[1], ARGV[2]
local now = now_ms()
local released, lost, parked = 0, 0, 0
for i = 3, #ARGV, 6 do
  local flow, claimed, count = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local poison, record, reason = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local removed = tonumber(redis.call('HGET', KEYS[4], flow) or 0)
  if redis.call('HGET', KEYS[3], flow) ~= token or removed ~= claimed then
    lost = lost + 1
  else
    local queue = flow_key(base, flow, 'q')
    if count > 0 then
      redis.call('LTRIM', queue, count, -1)
      removed = removed + count
    end
    redis.call('ZREM', KEYS[2], flow)
    redis.call('HDEL', KEYS[3], flow)
    -- a poison is told by its record (never empty): the entry itself may be an empty string
    if record ~= '' and redis.call('LINDEX', queue, 0) == poison then
      redis.call('LPOP', queue)
      removed = removed + 1
      redis.call('RPUSH', flow_key(base, flow, 'dead'), record)
      redis.call('INCR', flow_key(base, flow, 'dlgen'))
      redis.call('SET', flow_key(base, flow, 'reason'), reason)
      redis.call('ZADD', KEYS[5], now, flow)
      parked = parked + 1
    end
    if redis.call('LLEN', queue) == 0 then
      redis.call('HDEL', KEYS[4], flow)
    else
      redis.call('HSET', KEYS[4], flow, removed)
      make_ready(base, flow, now)
    end
    released = released + 1
  end
end
if released > 0 then
  redis.call('DEL', base .. 'claim:' .. token)  -- the claim's replay record: done with
end
return {released, lost, parked}
