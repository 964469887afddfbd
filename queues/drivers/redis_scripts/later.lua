-- later.lua: add one job that becomes available after a delay.
--
-- KEYS[1] delayed zset    routemq:queue:{name}:delayed (score = due unix time)
-- KEYS[2] notify list     routemq:queue:{name}:notify
-- KEYS[3] known queues    routemq:queues; KEYS[1] again in cluster mode, where the
--                         client keeps that set itself
-- KEYS[4] id index hash   routemq:queue:{name}:ids
-- ARGV[1] payload         job envelope JSON
-- ARGV[2] delay           seconds from now (server clock), may be fractional; the
--                         client caps it at MAX_DELAY_SECONDS
-- ARGV[3] queue name
-- ARGV[4] notify cap
-- ARGV[5] job id          the envelope's id
--
-- Guarantees: unless a job with this id is already in the queue (id index),
-- the job is scored by the server's clock (same for every worker) and indexed,
-- and a blocked worker is woken so it recomputes how long to wait; returns 1.
-- A job already there is not added again; returns 0.
-- @include id_index.lua
if not index_add(KEYS[4], ARGV[5]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = string.format('%.6f', now + tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], due, ARGV[1])
if redis.call('RPUSH', KEYS[2], '1') > tonumber(ARGV[4]) then
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
end
if KEYS[3] ~= KEYS[1] then
  redis.call('SADD', KEYS[3], ARGV[3])
end
return 1
