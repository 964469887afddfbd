-- ack.lua: delete a finished job, only while the caller's reservation is live.
--
-- KEYS[1] reserved list       routemq:queue:{name}:reserved
-- KEYS[2] leases zset         routemq:queue:{name}:leases
-- KEYS[3] reservations hash   routemq:queue:{name}:reservations
-- KEYS[4] transfer hash       routemq:queue:{name}:transfer
-- ARGV[1] job id
-- ARGV[2] token               the payload as reserved (fencing token)
--
-- Guarantees: if reservations[id] == token and the lease has not expired
-- (server clock), the job leaves reserved, leases, reservations and transfer,
-- and 1 is returned. Otherwise (stale or unknown reservation) nothing changes
-- and 0 is returned, so a worker whose lease ran out can never delete the job
-- of its new owner.
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
return 1
