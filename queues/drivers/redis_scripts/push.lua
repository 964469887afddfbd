-- push.lua: add one job at the tail of a queue, available now.
--
-- KEYS[1] pending list    routemq:queue:{name}
-- KEYS[2] notify list     routemq:queue:{name}:notify
-- KEYS[3] known queues    routemq:queues (set of queue names)
-- ARGV[1] payload         job envelope JSON
-- ARGV[2] queue name
-- ARGV[3] notify cap      most wake-up tokens kept in the notify list
--
-- Guarantees: the job is appended at the tail (the head is the oldest job), a
-- wake-up token is queued for a worker blocked on this queue, and the notify
-- list never holds more than ARGV[3] tokens. Returns the pending length.
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
if redis.call('RPUSH', KEYS[2], '1') > tonumber(ARGV[3]) then
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
end
redis.call('SADD', KEYS[3], ARGV[2])
return length
