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
--
-- Guarantees: due delayed jobs and expired leases are first requeued as pop.lua
-- does (so the jobs of a migration that died are taken again once their lease
-- ran out); then pending jobs (oldest first) then delayed jobs (earliest due
-- first) move to reserved WITHOUT counting an attempt, leased until
-- now + retry_after; a delayed job's due time is kept in the transfer hash so
-- that, if the migration dies and its lease expires, pop.lua puts it back into
-- delayed rather than running it early. Returns a flat list
-- {payload, due time, payload, due time, ...}; due time is now for pending jobs.
-- @include requeue_due.lua
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_s = string.format('%.6f', now)
local limit = tonumber(ARGV[1])
local lease = string.format('%.6f', now + tonumber(ARGV[2]))
local out = {}

requeue_due(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], now, limit)

local function reserve(payload, due)
  local id = string.match(payload, '^{"attempts":%d+,"id":"([^"]+)"')
  if not id then
    return false
  end
  redis.call('RPUSH', KEYS[3], payload)
  redis.call('ZADD', KEYS[4], lease, id)
  redis.call('HSET', KEYS[5], id, payload)
  if due then
    redis.call('HSET', KEYS[6], id, due)
  end
  return true
end

while #out < 2 * limit do
  local payload = redis.call('LINDEX', KEYS[1], 0)
  if not payload then
    break
  end
  if not reserve(payload, nil) then
    return redis.error_reply('malformed job envelope at the head of ' .. KEYS[1])
  end
  redis.call('LPOP', KEYS[1])
  out[#out + 1] = payload
  out[#out + 1] = now_s
end

local remaining = limit - #out / 2
if remaining > 0 then
  local delayed = redis.call('ZRANGE', KEYS[2], 0, remaining - 1, 'WITHSCORES')
  for i = 1, #delayed, 2 do
    local payload, due = delayed[i], delayed[i + 1]
    if reserve(payload, due) then
      redis.call('ZREM', KEYS[2], payload)
      out[#out + 1] = payload
      out[#out + 1] = due
    end
  end
end
return out
