-- id_index.lua: included by every script that adds, reserves or removes a job.
--
-- routemq:queue:{name}:ids (Hash) indexes the queue's jobs by envelope id, so
-- "is this job here?" (contains.lua) costs one HEXISTS instead of a scan.
-- Every script keeps it in the same atomic step as the job's own move. Values:
--   'q'          pending or delayed
--   'r:<time>'   reserved by a worker since <time> (server clock, seconds)
--   't'          leased by a migration (take_for_transfer.lua)
--   'x:<secs>'   pending again after a worker's lease expired: that attempt
--                was unsettled for <secs> seconds (pop.lua reports it, so the
--                next worker can tell an attempt that overran its timeout)
-- An entry exists exactly while a script-added job with that id is pending,
-- delayed or reserved. Entries written by hand (raw RPUSH/ZADD) or queued
-- before the index existed are indexed when a pop or migration first reserves
-- them; until then contains() does not see them.
local DUPLICATE_PREFIX = 'duplicate-'

-- index_add(ids, id): record a new job; false if one with this id is already queued.
local function index_add(ids, id)
  return redis.call('HSETNX', ids, id, 'q') == 1
end

-- index_drop(ids, id): the job left the queue (ack, fail).
local function index_drop(ids, id)
  redis.call('HDEL', ids, id)
end

-- index_requeue(ids, id): a reservation ended without running to a settle
-- (release, or an expired migration lease): the job is pending or delayed again.
local function index_requeue(ids, id)
  if string.sub(id, 1, #DUPLICATE_PREFIX) ~= DUPLICATE_PREFIX then
    redis.call('HSET', ids, id, 'q')
  end
end
