-- fail.lua: move a reserved job to the Redis failed list, fenced.
--
-- KEYS[1] reserved list       routemq:queue:{name}:reserved
-- KEYS[2] leases zset         routemq:queue:{name}:leases
-- KEYS[3] reservations hash   routemq:queue:{name}:reservations
-- KEYS[4] transfer hash       routemq:queue:{name}:transfer
-- KEYS[5] id index hash       routemq:queue:{name}:ids
-- KEYS[6] failed list         routemq:queue:failed:{name}
-- KEYS[7] failed queues set   routemq:queues:failed (names with a failed list); KEYS[6]
--                             again in cluster mode, where the client keeps that set
-- KEYS[8] settle receipt      routemq:queue:settles:{nonce} (one per fail call)
-- ARGV[1] job id
-- ARGV[2] token               the reservation's fencing token (its nonce, see token.lua)
-- ARGV[3] failed record       JSON {"id":..., "connection", "queue", "payload",
--                             "exception", "failed_at"} built by the caller
-- ARGV[4] queue name
-- ARGV[5] receipt ttl         seconds the settle receipt is kept
--
-- Guarantees: fenced like ack.lua. On success the reservation is removed (and
-- the job from the id index) and the record appended to the failed list in the
-- same atomic step (the job is never in both places, never in neither), the
-- receipt is set; returns 1. Otherwise 0, no change. A call re-sent after its
-- first run succeeded finds its receipt and returns 1 without adding a second
-- record.
-- @include reservation.lua
local now = server_now()
local verdict = settle_verdict(KEYS[8], KEYS[2], KEYS[3], ARGV[1], ARGV[2], now)
if verdict ~= nil then
  return verdict
end
drop_reservation(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
index_drop(KEYS[5], ARGV[1])
redis.call('RPUSH', KEYS[6], ARGV[3])
if KEYS[7] ~= KEYS[6] then
  redis.call('SADD', KEYS[7], ARGV[4])
end
mark_settled(KEYS[8], ARGV[5])
return 1
