-- batch_finish.lua: count one finished job of a batch, once.
--
-- KEYS[1] batch state hash   routemq:batch:{<id>}
-- KEYS[2] finished jobs set  routemq:batch:{<id>}:jobs
-- ARGV[1] job id
-- ARGV[2] outcome            'done' or 'failed'
-- ARGV[3] ttl                seconds the state is kept once every job finished
--
-- Guarantees, in one atomic step: the job id is added to the set of finished
-- jobs; only if it was not there yet (SADD says so) is pending lowered by one
-- and done or failed raised by one. When pending reaches 0 the batch gets its
-- finished_at (server clock) and both keys expire after the ttl. So two
-- workers finishing the last two jobs at once see pending 1 and 0, never 0
-- twice, and a job counted before a crash is not counted again on its redo.
-- Returns {new (1/0), pending, done, failed}, or {-1} if the batch is unknown.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
local new = redis.call('SADD', KEYS[2], ARGV[1])
if new == 1 then
  local pending = redis.call('HINCRBY', KEYS[1], 'pending', -1)
  redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
  if pending <= 0 then
    local t = redis.call('TIME')
    redis.call('HSET', KEYS[1], 'finished_at',
      string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000))
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    redis.call('EXPIRE', KEYS[2], ARGV[3])
  end
end
local state = redis.call('HMGET', KEYS[1], 'pending', 'done', 'failed')
return {new, tonumber(state[1]), tonumber(state[2]), tonumber(state[3])}
