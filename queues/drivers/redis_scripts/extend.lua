-- extend.lua: heartbeat, renew a live lease to retry_after seconds from now.
--
-- KEYS[1] leases zset         routemq:queue:{name}:leases
-- KEYS[2] reservations hash   routemq:queue:{name}:reservations
-- ARGV[1] job id
-- ARGV[2] token               the reservation's fencing token (the payload as reserved,
--                             or 'transfer:<nonce>:' .. payload for a migration)
-- ARGV[3] retry_after         lease length in seconds
--
-- Guarantees: fenced like ack.lua; on success the lease expires at
-- now + retry_after (server clock) and 1 is returned, otherwise 0 and no change.
-- @include reservation.lua
local now = server_now()
if not holds_lease(KEYS[1], KEYS[2], ARGV[1], ARGV[2], now) then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%.6f', now + tonumber(ARGV[3])), ARGV[1])
return 1
