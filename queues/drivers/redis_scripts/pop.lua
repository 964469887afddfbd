-- pop.lua: reserve the oldest available job of the first non-empty queue.
--
-- For each queue q (in priority order) seven keys, KEYS[7*(q-1) + k]:
--   k=1 pending list        routemq:queue:{name}
--   k=2 delayed zset        routemq:queue:{name}:delayed      (score = due time)
--   k=3 reserved list       routemq:queue:{name}:reserved     (in-flight payloads)
--   k=4 leases zset         routemq:queue:{name}:leases       (job id -> lease expiry)
--   k=5 reservations hash   routemq:queue:{name}:reservations (job id -> token)
--   k=6 notify list         routemq:queue:{name}:notify       (wake-up tokens)
--   k=7 transfer hash       routemq:queue:{name}:transfer     (job id -> due time, migrations)
-- then KEYS[#KEYS]         receipt string routemq:queue:pops:{nonce} (one per pop call)
-- ARGV[1] retry_after     lease length in seconds
-- ARGV[2] batch           most delayed/expired jobs moved per queue per call
-- ARGV[3] receipt ttl     seconds the receipt is kept
-- ARGV[4] token prefix    '<nonce>:' with the pop call's 32-hex-digit nonce
-- ARGV[5 ..]              queue names, same order as the keys
--
-- Guarantees, all in one atomic step on the server clock:
-- * idempotent per call nonce: if the receipt exists and the reservation it
--   names is still live (same token, lease not expired), that same reservation
--   is returned and nothing changes. So when the client re-sends this script
--   after a lost reply (redis-py retry_on_error), no second job is reserved;
-- * due delayed jobs move to the tail of pending in due order;
-- * reserved jobs whose lease expired move back to pending with their attempts
--   already counted (a migration's delayed job goes back to delayed);
-- * the head (oldest) job of the first non-empty pending list is reserved: its
--   attempts count is rewritten by string matching on the envelope prefix
--   {"attempts":N,"id":"..." (user data is never decoded), the new payload is
--   appended to reserved, leased until now + retry_after and recorded in
--   reservations under the fencing token ARGV[4] .. payload, unique to this
--   reservation (see token.lua: a later pop of the same job has another
--   nonce, even if its payload is byte-identical); the receipt is set to
--   "<queue index>\n<job id>\n<sha1 of the token>" with the receipt ttl.
-- Returns {queue name, payload, job id} or, when nothing is available,
-- {'', seconds until the earliest delayed job or lease comes due ('' if none)}.
-- A head payload that is not an envelope is reserved unchanged under the id
-- 'malformed-<sha1>' so the worker can fail it with the reason.
-- @include requeue_due.lua
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_s = string.format('%.6f', now)
local retry_after = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local nqueues = (#KEYS - 1) / 7
local receipt_key = KEYS[#KEYS]

local receipt = redis.call('GET', receipt_key)
if receipt then
  local index, receipt_id, digest = string.match(receipt, '^(%d+)\n(.*)\n(%x+)$')
  local q = tonumber(index)
  if q and q >= 1 and q <= nqueues then
    local b = 7 * (q - 1)
    local token = redis.call('HGET', KEYS[b + 5], receipt_id)
    local lease = redis.call('ZSCORE', KEYS[b + 4], receipt_id)
    if token and lease and tonumber(lease) >= now and redis.sha1hex(token) == digest then
      return {ARGV[4 + q], token_payload(token), receipt_id}
    end
  end
end

for q = 1, nqueues do
  local b = 7 * (q - 1)
  local pending, delayed, reserved = KEYS[b + 1], KEYS[b + 2], KEYS[b + 3]
  local leases, reservations, transfer = KEYS[b + 4], KEYS[b + 5], KEYS[b + 7]

  requeue_due(pending, delayed, reserved, leases, reservations, transfer, now, batch)
end

for q = 1, nqueues do
  local b = 7 * (q - 1)
  local pending = KEYS[b + 1]
  -- Pop from the head: RPUSH appends at the tail, so the head is the oldest job.
  local payload = redis.call('LINDEX', pending, 0)
  if payload then
    local digits, id = string.match(payload, '^{"attempts":(%d+),"id":"([^"]+)"')
    local reserved_payload = payload
    if digits then
      reserved_payload = '{"attempts":' .. string.format('%d', tonumber(digits) + 1)
        .. string.sub(payload, 13 + #digits)
    else
      -- Not an envelope of ours (written by hand?): reserve it unchanged under a
      -- synthetic id so the worker moves it to the failed store with the reason,
      -- instead of the queue being blocked behind it.
      id = 'malformed-' .. redis.sha1hex(payload)
    end
    redis.call('LPOP', pending)
    redis.call('RPUSH', KEYS[b + 3], reserved_payload)
    redis.call('ZADD', KEYS[b + 4], string.format('%.6f', now + retry_after), id)
    local token = ARGV[4] .. reserved_payload
    redis.call('HSET', KEYS[b + 5], id, token)
    redis.call('SET', receipt_key, q .. '\n' .. id .. '\n' .. redis.sha1hex(token), 'EX', ARGV[3])
    if redis.call('LLEN', pending) == 0 then
      -- Tokens only stand for jobs that are gone: keep the list from growing.
      redis.call('DEL', KEYS[b + 6])
    end
    return {ARGV[4 + q], reserved_payload, id}
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
