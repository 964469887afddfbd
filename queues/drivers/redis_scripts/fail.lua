-- fail.lua: move a reserved job to the Redis failed list, fenced.
--
-- KEYS[1] reserved list       routemq:queue:{name}:reserved
-- KEYS[2] leases zset         routemq:queue:{name}:leases
-- KEYS[3] reservations hash   routemq:queue:{name}:reservations
-- KEYS[4] transfer hash       routemq:queue:{name}:transfer
-- KEYS[5] failed list         routemq:queue:failed:{name}
-- KEYS[6] failed queues set   routemq:queues:failed (names with a failed list)
-- ARGV[1] job id
-- ARGV[2] token               the reservation's fencing token (the payload as reserved,
--                             or 'transfer:<nonce>:' .. payload for a migration)
-- ARGV[3] failed record       JSON {"id":..., "connection", "queue", "payload",
--                             "exception", "failed_at"} built by the caller
-- ARGV[4] queue name
--
-- Guarantees: fenced like ack.lua. On success the reservation is removed and
-- the record appended to the failed list in the same atomic step (the job is
-- never in both places, never in neither); returns 1. Otherwise 0, no change.
-- @include reservation.lua
local now = server_now()
if not holds_lease(KEYS[2], KEYS[3], ARGV[1], ARGV[2], now) then
  return 0
end
drop_reservation(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[5], ARGV[3])
redis.call('SADD', KEYS[6], ARGV[4])
return 1
