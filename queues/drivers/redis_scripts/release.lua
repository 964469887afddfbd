-- release.lua: give a reserved job back for another attempt, now or later.
--
-- KEYS[1] pending list        routemq:queue:{name}
-- KEYS[2] delayed zset        routemq:queue:{name}:delayed
-- KEYS[3] reserved list       routemq:queue:{name}:reserved
-- KEYS[4] leases zset         routemq:queue:{name}:leases
-- KEYS[5] reservations hash   routemq:queue:{name}:reservations
-- KEYS[6] notify list         routemq:queue:{name}:notify
-- KEYS[7] transfer hash       routemq:queue:{name}:transfer
-- ARGV[1] job id
-- ARGV[2] token               the payload as reserved (fencing token)
-- ARGV[3] delay               seconds before the job is available again
-- ARGV[4] notify cap
--
-- Guarantees: fenced like ack.lua. On success, in one step, the reservation is
-- removed and the payload (attempts as counted by its pop) goes to the tail of
-- pending (delay <= 0) or to delayed scored now + delay; a blocked worker is
-- woken. Returns 1, or 0 with no change when the reservation is not live.
-- @include reservation.lua
local now = server_now()
if not holds_lease(KEYS[4], KEYS[5], ARGV[1], ARGV[2], now) then
  return 0
end
drop_reservation(KEYS[3], KEYS[4], KEYS[5], KEYS[7], ARGV[1], ARGV[2])
local delay = tonumber(ARGV[3])
if delay > 0 then
  redis.call('ZADD', KEYS[2], string.format('%.6f', now + delay), ARGV[2])
else
  redis.call('RPUSH', KEYS[1], ARGV[2])
end
if redis.call('RPUSH', KEYS[6], '1') > tonumber(ARGV[4]) then
  redis.call('LTRIM', KEYS[6], -tonumber(ARGV[4]), -1)
end
return 1
