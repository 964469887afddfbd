-- ack.lua: delete a finished job, only while the caller's reservation is live.
--
-- KEYS[1] reserved list       routemq:queue:{name}:reserved
-- KEYS[2] leases zset         routemq:queue:{name}:leases
-- KEYS[3] reservations hash   routemq:queue:{name}:reservations
-- KEYS[4] transfer hash       routemq:queue:{name}:transfer
-- ARGV[1] job id
-- ARGV[2] token               the reservation's fencing token (the payload as reserved,
--                             or 'transfer:<nonce>:' .. payload for a migration)
--
-- Guarantees: if reservations[id] == token and the lease has not expired
-- (server clock), the job leaves reserved, leases, reservations and transfer,
-- and 1 is returned. Otherwise (stale or unknown reservation) nothing changes
-- and 0 is returned, so a worker whose lease ran out can never delete the job
-- of its new owner.
-- @include reservation.lua
local now = server_now()
if not holds_lease(KEYS[2], KEYS[3], ARGV[1], ARGV[2], now) then
  return 0
end
drop_reservation(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2])
return 1
