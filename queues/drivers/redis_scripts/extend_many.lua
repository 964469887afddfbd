-- extend_many.lua: heartbeat of several jobs of ONE queue held by one worker process.
--
-- KEYS[1] leases zset         routemq:queue:{name}:leases
-- KEYS[2] reservations hash   routemq:queue:{name}:reservations
-- ARGV[1] retry_after         lease length in seconds
-- ARGV[2 ..]                  pairs: job id, token (the reservation's fencing token)
--
-- Guarantees: for each pair, fenced like extend.lua, in one atomic step: a live
-- reservation's lease is renewed to now + retry_after (server clock) ('1'); any
-- other changes nothing ('0'). Returns the verdicts in pair order. No receipt:
-- a heartbeat re-sent after a lost reply renews again from a later "now",
-- which is what a heartbeat is for, and a lost lease stays lost ('0').
-- @include reservation.lua
local now = server_now()
local lease_at = string.format('%.6f', now + tonumber(ARGV[1]))
local verdicts = {}
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if holds_lease(KEYS[1], KEYS[2], id, token, now) then
    redis.call('ZADD', KEYS[1], lease_at, id)
    verdicts[#verdicts + 1] = '1'
  else
    verdicts[#verdicts + 1] = '0'
  end
end
return table.concat(verdicts)
