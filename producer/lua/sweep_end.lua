-- A sweep ends its slice or its linger. Idle (ARGV[3] = 0): it leaves only if nothing is
-- ready (else it goes on: a flow became ready since its last claim). Handing over
-- (ARGV[3] = 1): it leaves and, if flows are ready, registers its successor.
-- KEYS[1] ready, KEYS[2] sweeps
-- ARGV[1] base, ARGV[2] sweep id, ARGV[3] handing over (0/1), ARGV[4] queued-sweep ttl (ms),
-- ARGV[5] max sweeps
-- Safe to replay: leaving twice is leaving once; a replayed hand-over registers no second
-- successor while the first is queued (the count of sweeps is bounded by max sweeps).
-- Returns 0 (stay), 1 (left) or the successor's job id to enqueue.
local base, id = ARGV[1], ARGV[2]
local ready = redis.call('ZCARD', KEYS[1])
if ARGV[3] == '0' then
  if ready > 0 then
    return 0
  end
  redis.call('ZREM', KEYS[2], id)
  return 1
end
redis.call('ZREM', KEYS[2], id)
if ready == 0 then
  return 1
end
return want_sweep(base, now_ms(), tonumber(ARGV[4]), tonumber(ARGV[5])) or 1
