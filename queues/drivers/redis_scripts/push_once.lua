-- push_once.lua: add a job whose id may be dispatched only once (workflow links
-- and callbacks, whose ids are deterministic), now or after a delay.
--
-- KEYS[1] pending list    routemq:queue:{name}
-- KEYS[2] delayed zset    routemq:queue:{name}:delayed
-- KEYS[3] notify list     routemq:queue:{name}:notify
-- KEYS[4] known queues    routemq:queues; KEYS[1] again in cluster mode, where the
--                         client keeps that set (as for push.lua)
-- KEYS[5] id index hash   routemq:queue:{name}:ids
-- KEYS[6] dispatch mark   routemq:queue:{name}:once:{job id}
-- ARGV[1] payload         job envelope JSON
-- ARGV[2] queue name
-- ARGV[3] notify cap
-- ARGV[4] job id
-- ARGV[5] delay           seconds (0: available now; the client caps it)
-- ARGV[6] mark ttl        seconds the dispatch mark is kept (JOB_STATUS_RETENTION)
--
-- Guarantees: in one step, unless this id was dispatched through this script
-- before (its mark still exists) or is in the queue now (id index), the mark
-- is set with the ttl and the job is added like push.lua / later.lua; returns
-- 1. Otherwise nothing changes and 0 is returned. So a workflow step redone
-- after a crash (the job that dispatches the next link runs again) never
-- queues that link twice, even when the first copy already finished.
-- @include id_index.lua
if redis.call('EXISTS', KEYS[6]) == 1 then
  return 0
end
if not index_add(KEYS[5], ARGV[4]) then
  return 0
end
redis.call('SET', KEYS[6], '1', 'EX', ARGV[6])
local delay = tonumber(ARGV[5])
if delay > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  redis.call('ZADD', KEYS[2], string.format('%.6f', now + delay), ARGV[1])
else
  redis.call('RPUSH', KEYS[1], ARGV[1])
end
if redis.call('RPUSH', KEYS[3], '1') > tonumber(ARGV[3]) then
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
end
if KEYS[4] ~= KEYS[1] then
  redis.call('SADD', KEYS[4], ARGV[2])
end
return 1
