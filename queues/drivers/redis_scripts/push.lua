-- push.lua: add one job at the tail of a queue, available now.
--
-- KEYS[1] pending list    routemq:queue:{name}
-- KEYS[2] notify list     routemq:queue:{name}:notify
-- KEYS[3] known queues    routemq:queues (set of queue names); KEYS[1] again in
--                         cluster mode, where the client keeps that set itself
-- KEYS[4] id index hash   routemq:queue:{name}:ids
-- ARGV[1] payload         job envelope JSON
-- ARGV[2] queue name
-- ARGV[3] notify cap      most wake-up tokens kept in the notify list
-- ARGV[4] job id          the envelope's id (read by the client from its prefix)
--
-- Guarantees: unless a job with this id is already in the queue (pending,
-- delayed or reserved: the id index says so), the job is appended at the tail
-- (the head is the oldest job), indexed, a wake-up token is queued for a worker
-- blocked on this queue, and the notify list never holds more than ARGV[3]
-- tokens; returns 1. A job already there is not added again (a push re-sent
-- after a lost reply adds nothing); returns 0.
-- @include id_index.lua
if not index_add(KEYS[4], ARGV[4]) then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[1])
if redis.call('RPUSH', KEYS[2], '1') > tonumber(ARGV[3]) then
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
end
if KEYS[3] ~= KEYS[1] then
  redis.call('SADD', KEYS[3], ARGV[2])
end
return 1
