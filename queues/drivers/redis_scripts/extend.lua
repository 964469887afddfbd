-- extend.lua: heartbeat, renew a live lease to retry_after seconds from now.
--
-- KEYS[1] leases zset         routemq:queue:{name}:leases
-- KEYS[2] reservations hash   routemq:queue:{name}:reservations
-- KEYS[3] settle receipt      routemq:queue:settles:{nonce} (one per extend call)
-- ARGV[1] job id
-- ARGV[2] token               the reservation's fencing token (its nonce, see token.lua)
-- ARGV[3] retry_after         lease length in seconds
-- ARGV[4] receipt ttl         seconds the settle receipt is kept
--
-- Guarantees: fenced like ack.lua; on success the lease expires at
-- now + retry_after (server clock), the receipt is set and 1 is returned,
-- otherwise 0 and no change. A call re-sent after its first run succeeded
-- finds its receipt and returns 1 without changing anything.
-- @include reservation.lua
local now = server_now()
local verdict = settle_verdict(KEYS[3], KEYS[1], KEYS[2], ARGV[1], ARGV[2], now)
if verdict ~= nil then
  return verdict
end
redis.call('ZADD', KEYS[1], string.format('%.6f', now + tonumber(ARGV[3])), ARGV[1])
mark_settled(KEYS[3], ARGV[4])
return 1
