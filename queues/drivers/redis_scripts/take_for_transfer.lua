-- take_for_transfer.lua: lease up to N pending and delayed jobs for a migration.
--
-- KEYS[1] pending list        routemq:queue:{name}
-- KEYS[2] delayed zset        routemq:queue:{name}:delayed
-- KEYS[3] reserved list       routemq:queue:{name}:reserved
-- KEYS[4] leases zset         routemq:queue:{name}:leases
-- KEYS[5] reservations hash   routemq:queue:{name}:reservations
-- KEYS[6] transfer hash       routemq:queue:{name}:transfer
-- KEYS[7] id index hash       routemq:queue:{name}:ids
-- ARGV[1] limit               most jobs taken
-- ARGV[2] retry_after         lease length in seconds
-- ARGV[3] token               'transfer:<32 hex digits>', new for every call
-- ARGV[4] max skip            most entries stepped over because their job id is
--                             already reserved (bounds the script's run time)
--
-- Guarantees, in one atomic step: due delayed jobs and expired leases are first
-- requeued as pop.lua does (so the jobs of a migration that died are taken again
-- once their lease ran out); then pending jobs (oldest first) then delayed jobs
-- (earliest due first) move to reserved WITHOUT counting an attempt, leased
-- until now + retry_after, and marked 't' in the id index. Fencing: each is
-- reserved under the token ARGV[3] (reservations[id] = token .. ':' .. payload;
-- the :reserved list keeps the bare payload), never equal
-- to the token of the worker or migration whose expired lease was just
-- requeued, so that one can no longer ack, release, extend or fail the job.
-- transfer[id] holds the job's due time (now for a pending job): it marks the
-- reservation as a migration's and, if the migration dies and its lease
-- expires, pop.lua puts a delayed job back into delayed rather than running it
-- early.
-- A payload that is not a job envelope is reserved the same way under the id
-- 'malformed-<sha1>' (as pop.lua does) and returned with that id: the caller
-- moves it to the failed store, so it neither blocks the migration nor is lost.
-- An entry whose id already has a reservation (a duplicate copy, e.g. a push
-- re-sent after a lost reply) is skipped and left where it is: reserving it
-- twice would leave one :reserved entry no settle could remove. The scan goes
-- on past it, so the rest of the queue is still taken; at most ARGV[4] such
-- entries are stepped over per call (pending and delayed each).
-- Returns a flat list {payload, due time, job id, ...}; due time is now for
-- pending jobs.
-- @include requeue_due.lua
-- @include envelope.lua
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_s = string.format('%.6f', now)
local limit = tonumber(ARGV[1])
local lease = string.format('%.6f', now + tonumber(ARGV[2]))
local max_skip = tonumber(ARGV[4])
local out = {}

requeue_due(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], now, limit)

local function job_id(payload)
  local _, id = envelope_head(payload)
  return id or ('malformed-' .. redis.sha1hex(payload))
end

-- Reserve one job; false (nothing changed) if its id is already reserved.
local function reserve(payload, due)
  local id = job_id(payload)
  if redis.call('HEXISTS', KEYS[5], id) == 1 then
    return false
  end
  redis.call('RPUSH', KEYS[3], payload)
  redis.call('ZADD', KEYS[4], lease, id)
  redis.call('HSET', KEYS[5], id, ARGV[3] .. ':' .. payload)
  redis.call('HSET', KEYS[6], id, due)
  redis.call('HSET', KEYS[7], id, 't')
  out[#out + 1] = payload
  out[#out + 1] = due
  out[#out + 1] = id
  return true
end

-- Skipped entries stay in place, so `index` counts them: the next candidate is
-- always at index `skipped`. A taken entry at index > 0 is removed by LREM of
-- its exact bytes: every entry before it was skipped because its id is
-- reserved, so none of them has the same bytes (same bytes, same id, and this
-- id was not reserved), and LREM's first match is this entry.
local skipped = 0
while #out < 3 * limit and skipped < max_skip do
  local payload = redis.call('LINDEX', KEYS[1], skipped)
  if not payload then
    break
  end
  if reserve(payload, now_s) then
    if skipped == 0 then
      redis.call('LPOP', KEYS[1])
    else
      redis.call('LREM', KEYS[1], 1, payload)
    end
  else
    skipped = skipped + 1
  end
end

skipped = 0
while #out < 3 * limit and skipped < max_skip do
  local entry = redis.call('ZRANGE', KEYS[2], skipped, skipped, 'WITHSCORES')
  if not entry[1] then
    break
  end
  if reserve(entry[1], entry[2]) then
    redis.call('ZREM', KEYS[2], entry[1])
  else
    skipped = skipped + 1
  end
end
return out
