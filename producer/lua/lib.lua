-- Shared by every script of the protocol (prepended to each one when it is loaded).
--
-- Keys of one shard share the hash tag "{s}": base = "<prefix>:{s}:". Shard-level keys come in
-- KEYS; per-flow keys are built from base .. flow .. ":<name>" inside the scripts (the same
-- hash tag, so the same cluster slot as the shard's KEYS).
--   base..'ready'   zset  flows with queued events, not leased, not parked; score: ready since (ms)
--   base..'leased'  zset  flow -> lease deadline (ms)
--   base..'leases'  hash  flow -> fencing token of the lease holder
--   base..'removed' hash  flow -> entries removed from the queue's head since it was last empty
--   base..'parked'  zset  parked flows, score: parked since (ms)
--   base..'sweeps'  zset  sweep job id -> deadline (ms): sweeps queued or running
--   base..'wake'    list  at most one token: an idle sweep blocks on it
--   base..F..':q'      list    the flow's envelopes, in emission order
--   base..F..':dead'   list    dead letters
--   base..F..':dlgen'  string  generation of the dead letters (bumped on every change)
--   base..F..':dlop'   string  id of the operator command that last resumed the flow (a day)
--   base..F..':reason' string  why the flow is parked

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function flow_key(base, flow, name)
  return base .. flow .. ':' .. name
end

-- Put a flow in ready (if it has events and is neither leased nor parked); wake a sweep.
-- Returns 1 when the flow was added, 0 otherwise.
local function make_ready(base, flow, now, known_queued)
  if not known_queued and redis.call('LLEN', flow_key(base, flow, 'q')) == 0 then
    return 0
  end
  if redis.call('ZSCORE', base .. 'leased', flow) then
    return 0
  end
  if redis.call('EXISTS', flow_key(base, flow, 'reason')) == 1 then
    return 0
  end
  local added = redis.call('ZADD', base .. 'ready', 'NX', now, flow)
  if added == 1 then
    redis.call('LPUSH', base .. 'wake', '1')
    redis.call('LTRIM', base .. 'wake', 0, 0)
  end
  return added
end

-- A sweep is wanted when none is queued or running: register one and return its job id
-- (the caller enqueues the rq job under that id), else return false.
local function want_sweep(base, now, queued_ttl_ms, max_sweeps)
  local sweeps = base .. 'sweeps'
  if redis.call('ZCOUNT', sweeps, now, '+inf') >= max_sweeps then
    return false  -- enough sweeps alive (the common case: one command)
  end
  redis.call('ZREMRANGEBYSCORE', sweeps, '-inf', now)  -- forget the dead ones
  -- rq job ids are [A-Za-z0-9_-]+: the shard's base with its other characters as '_'
  local id = string.gsub(base, '[^%w_-]', '_') .. 'sweep-' .. redis.call('INCR', base .. 'sweep_seq')
  redis.call('ZADD', sweeps, now + queued_ttl_ms, id)
  return id
end

-- Leases whose deadline passed go back to ready (their holder died or stalled).
local function reap(base, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', base .. 'leased', '-inf', now, 'LIMIT', 0, limit)
  for _, flow in ipairs(expired) do
    redis.call('ZREM', base .. 'leased', flow)
    redis.call('HDEL', base .. 'leases', flow)
    make_ready(base, flow, now)
  end
  return #expired
end
