-- rate_take.lua: take one pass of a sliding-window rate limit.
--
-- KEYS[1] window zset  routemq:coord:rate:{name}; member -> pass time (microseconds)
-- ARGV[1] limit        passes allowed in any window of `per`
-- ARGV[2] per          window length, microseconds
-- ARGV[3] member       a unique name for this pass (a nonce)
--
-- Guarantees: atomic, on the server clock (TIME), so every process agrees on
-- "now": at most `limit` passes are granted in ANY interval of length `per`
-- (an exact sliding log, not fixed buckets). Returns 0 when this call passed,
-- else the microseconds until the oldest pass leaves the window (> 0).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local per = tonumber(ARGV[2])
-- '%.0f': tostring() would print 1.7e+15 and lose the microseconds
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - per))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(per / 1000) + 1)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + per - now
if wait < 1 then
  wait = 1
end
return wait
