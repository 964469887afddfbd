-- fail.lua: move a reserved job to the Redis failed list, fenced.
--
-- KEYS[1] reserved list       routemq:queue:{name}:reserved
-- KEYS[2] leases zset         routemq:queue:{name}:leases
-- KEYS[3] reservations hash   routemq:queue:{name}:reservations
-- KEYS[4] transfer hash       routemq:queue:{name}:transfer
-- KEYS[5] failed list         routemq:queue:failed:{name}
-- KEYS[6] failed queues set   routemq:queues:failed (names with a failed list)
-- ARGV[1] job id
-- ARGV[2] token               the payload as reserved (fencing token)
-- ARGV[3] failed record       JSON {"id":..., "connection", "queue", "payload",
--                             "exception", "failed_at"} built by the caller
-- ARGV[4] queue name
--
-- Guarantees: fenced like ack.lua. On success the reservation is removed and
-- the record appended to the failed list in the same atomic step (the job is
-- never in both places, never in neither); returns 1. Otherwise 0, no change.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then
  return 0
end
local lease = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not lease or tonumber(lease) < now then
  return 0
end
redis.call('LREM', KEYS[1], 1, ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('RPUSH', KEYS[5], ARGV[3])
redis.call('SADD', KEYS[6], ARGV[4])
return 1
