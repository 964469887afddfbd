-- clear.lua: delete every pending, delayed and reserved job of one queue.
--
-- KEYS[1] pending list        routemq:queue:{name}
-- KEYS[2] delayed zset        routemq:queue:{name}:delayed
-- KEYS[3] reserved list       routemq:queue:{name}:reserved
-- KEYS[4] leases zset         routemq:queue:{name}:leases
-- KEYS[5] reservations hash   routemq:queue:{name}:reservations
-- KEYS[6] notify list         routemq:queue:{name}:notify
-- KEYS[7] transfer hash       routemq:queue:{name}:transfer
-- KEYS[8] id index hash       routemq:queue:{name}:ids
--
-- Guarantees: all state of the queue goes in one step (its failed list stays).
-- The keys are UNLINKed: freeing a large queue's memory happens off the main
-- thread, so other clients are not held up. Returns how many jobs were deleted.
local count = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
  + redis.call('LLEN', KEYS[3])
redis.call('UNLINK', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
return count
