-- A running sweep that found more ready flows than one claim takes asks for a helper, up to
-- max sweeps (workers + 1) queued or running.
-- KEYS[1] ready, KEYS[2] sweeps
-- ARGV[1] base, ARGV[2] queued-sweep ttl (ms), ARGV[3] max sweeps
-- Returns a sweep job id to enqueue, or 0.
if redis.call('ZCARD', KEYS[1]) == 0 then
  return 0
end
return want_sweep(ARGV[1], now_ms(), tonumber(ARGV[2]), tonumber(ARGV[3])) or 0
