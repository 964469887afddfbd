-- job_status.lua: included by ack.lua and fail.lua.
--
-- A finished job's status lives in routemq:queue:{name}:status:{job id}, a
-- String holding one JSON object, for JOB_STATUS_RETENTION seconds (EXPIRE):
-- {"state":"done"|"failed","queue":...,"job":...,"attempts":N,"reason":...,
--  "finished_at":<server unix time>}. The client sends the object without its
-- last member; write_status appends finished_at from the server clock, so all
-- workers agree on it. Queued and running jobs need no record: the id index
-- (id_index.lua) already says so.
-- write_status(key, record, ttl, now) writes nothing for an empty record (a
-- migration's ack, a duplicate copy's fail: the job itself did not finish).
local function write_status(key, record, ttl, now)
  if record ~= '' then
    redis.call('SET', key, record .. string.format('%.3f', now) .. '}', 'EX', ttl)
  end
end
