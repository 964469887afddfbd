-- pop.lua: reserve the oldest available job of the first non-empty queue.
--
-- For each queue q (in priority order) seven keys, KEYS[7*(q-1) + k]:
--   k=1 pending list        routemq:queue:{name}
--   k=2 delayed zset        routemq:queue:{name}:delayed      (score = due time)
--   k=3 reserved list       routemq:queue:{name}:reserved     (in-flight payloads)
--   k=4 leases zset         routemq:queue:{name}:leases       (job id -> lease expiry)
--   k=5 reservations hash   routemq:queue:{name}:reservations (job id -> reserved payload)
--   k=6 notify list         routemq:queue:{name}:notify       (wake-up tokens)
--   k=7 transfer hash       routemq:queue:{name}:transfer     (job id -> due time, migrations)
-- ARGV[1] retry_after     lease length in seconds
-- ARGV[2] batch           most delayed/expired jobs moved per queue per call
-- ARGV[3 ..]              queue names, same order as the keys
--
-- Guarantees, all in one atomic step on the server clock:
-- * due delayed jobs move to the tail of pending in due order;
-- * reserved jobs whose lease expired move back to pending with their attempts
--   already counted (a migration's delayed job goes back to delayed);
-- * the head (oldest) job of the first non-empty pending list is reserved: its
--   attempts count is rewritten by string matching on the envelope prefix
--   {"attempts":N,"id":"..." (user data is never decoded), the new payload is
--   appended to reserved, leased until now + retry_after and recorded in
--   reservations (the payload is the fencing token).
-- Returns {queue name, payload} or, when nothing is available,
-- {'', seconds until the earliest delayed job or lease comes due ('' if none)}.
-- A malformed head payload is left in place and reported as an error.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_s = string.format('%.6f', now)
local retry_after = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local nqueues = #KEYS / 7

for q = 1, nqueues do
  local b = 7 * (q - 1)
  local pending, delayed, reserved = KEYS[b + 1], KEYS[b + 2], KEYS[b + 3]
  local leases, reservations, transfer = KEYS[b + 4], KEYS[b + 5], KEYS[b + 7]

  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_s, 'LIMIT', 0, batch)
  if #due > 0 then
    redis.call('ZREM', delayed, unpack(due))
    redis.call('RPUSH', pending, unpack(due))
  end

  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. now_s, 'LIMIT', 0, batch)
  for _, id in ipairs(expired) do
    local payload = redis.call('HGET', reservations, id)
    redis.call('ZREM', leases, id)
    redis.call('HDEL', reservations, id)
    if payload then
      redis.call('LREM', reserved, 1, payload)
      local due_at = redis.call('HGET', transfer, id)
      if due_at then
        redis.call('HDEL', transfer, id)
      end
      if due_at and tonumber(due_at) > now then
        redis.call('ZADD', delayed, due_at, payload)
      else
        redis.call('RPUSH', pending, payload)
      end
    end
  end
end

for q = 1, nqueues do
  local b = 7 * (q - 1)
  local pending = KEYS[b + 1]
  -- Pop from the head: RPUSH appends at the tail, so the head is the oldest job.
  local payload = redis.call('LINDEX', pending, 0)
  if payload then
    local digits, id = string.match(payload, '^{"attempts":(%d+),"id":"([^"]+)"')
    if not digits then
      return redis.error_reply('malformed job envelope at the head of ' .. pending)
    end
    redis.call('LPOP', pending)
    local attempts = tonumber(digits) + 1
    local reserved_payload = '{"attempts":' .. string.format('%d', attempts)
      .. string.sub(payload, 13 + #digits)
    redis.call('RPUSH', KEYS[b + 3], reserved_payload)
    redis.call('ZADD', KEYS[b + 4], string.format('%.6f', now + retry_after), id)
    redis.call('HSET', KEYS[b + 5], id, reserved_payload)
    if redis.call('LLEN', pending) == 0 then
      -- Tokens only stand for jobs that are gone: keep the list from growing.
      redis.call('DEL', KEYS[b + 6])
    end
    return {ARGV[2 + q], reserved_payload}
  end
end

local earliest = nil
for q = 1, nqueues do
  local b = 7 * (q - 1)
  redis.call('DEL', KEYS[b + 6])
  for _, key in ipairs({KEYS[b + 2], KEYS[b + 4]}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] then
      local at = tonumber(first[2])
      if earliest == nil or at < earliest then
        earliest = at
      end
    end
  end
end
if earliest == nil then
  return {'', ''}
end
return {'', string.format('%.6f', math.max(earliest - now, 0))}
