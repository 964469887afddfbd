-- take_for_transfer.lua: lease up to N pending and delayed jobs for a migration.
--
-- KEYS[1] pending list        routemq:queue:{name}
-- KEYS[2] delayed zset        routemq:queue:{name}:delayed
-- KEYS[3] reserved list       routemq:queue:{name}:reserved
-- KEYS[4] leases zset         routemq:queue:{name}:leases
-- KEYS[5] reservations hash   routemq:queue:{name}:reservations
-- KEYS[6] transfer hash       routemq:queue:{name}:transfer
-- ARGV[1] limit               most jobs taken
-- ARGV[2] retry_after         lease length in seconds
-- ARGV[3] token prefix        'transfer:<hex nonce>:', new for every call
--
-- Guarantees, in one atomic step: due delayed jobs and expired leases are first
-- requeued as pop.lua does (so the jobs of a migration that died are taken again
-- once their lease ran out); then pending jobs (oldest first) then delayed jobs
-- (earliest due first) move to reserved WITHOUT counting an attempt, leased
-- until now + retry_after. Fencing: each is reserved under the token
-- ARGV[3] .. payload (the :reserved list keeps the bare payload), never equal
-- to the token of the worker or migration whose expired lease was just
-- requeued, so that one can no longer ack, release, extend or fail the job.
-- transfer[id] holds the job's due time (now for a pending job): it marks the
-- token as a transfer token (transfer_token.lua) and, if the migration dies and
-- its lease expires, pop.lua puts a delayed job back into delayed rather than
-- running it early.
-- A payload that is not a job envelope is reserved the same way under the id
-- 'malformed-<sha1>' (as pop.lua does) and returned with that id: the caller
-- moves it to the failed store, so it neither blocks the migration nor is lost.
-- A job whose id already has a reservation (a duplicate copy) ends the batch:
-- reserving it twice would leave one :reserved entry no settle could remove.
-- Returns a flat list {payload, due time, job id, ...}; due time is now for
-- pending jobs.
-- @include requeue_due.lua
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_s = string.format('%.6f', now)
local limit = tonumber(ARGV[1])
local lease = string.format('%.6f', now + tonumber(ARGV[2]))
local out = {}

requeue_due(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], now, limit)

local function job_id(payload)
  local id = string.match(payload, '^{"attempts":%d+,"id":"([^"]+)"')
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
  redis.call('HSET', KEYS[5], id, ARGV[3] .. payload)
  redis.call('HSET', KEYS[6], id, due)
  out[#out + 1] = payload
  out[#out + 1] = due
  out[#out + 1] = id
  return true
end

while #out < 3 * limit do
  local payload = redis.call('LINDEX', KEYS[1], 0)
  if not payload then
    break
  end
  if not reserve(payload, now_s) then
    return out
  end
  redis.call('LPOP', KEYS[1])
end

local remaining = limit - #out / 3
if remaining > 0 then
  local delayed = redis.call('ZRANGE', KEYS[2], 0, remaining - 1, 'WITHSCORES')
  for i = 1, #delayed, 2 do
    local payload, due = delayed[i], delayed[i + 1]
    if not reserve(payload, due) then
      break
    end
    redis.call('ZREM', KEYS[2], payload)
  end
end
return out
