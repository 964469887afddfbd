-- batch_create.lua: record a new batch before its jobs are queued.
--
-- KEYS[1] batch state hash   routemq:batch:{<id>}      (the braces keep a batch's
--                                                     keys in one cluster slot)
-- KEYS[2] finished jobs set  routemq:batch:{<id>}:jobs
-- ARGV[1] total jobs
-- ARGV[2] callbacks JSON     {"then": envelope, "catch": ..., "finally": ...}
-- ARGV[3] name               the batch's name ('' for none)
--
-- Guarantees: the state (total, pending = total, done = 0, failed = 0,
-- callbacks, name, created_at on the server clock) is written unless the
-- batch exists (a re-sent call changes nothing); returns 1 if it was created.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'total', ARGV[1], 'pending', ARGV[1], 'done', 0, 'failed', 0,
  'callbacks', ARGV[2], 'name', ARGV[3],
  'created_at', string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000))
redis.call('DEL', KEYS[2])
return 1
