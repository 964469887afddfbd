-- pop_many.lua: reserve up to `count` of the oldest available jobs, each under its own lease.
--
-- KEYS as pop.lua: for each queue q (in priority order) eight keys, KEYS[8*(q-1) + k]:
--   k=1 pending list        routemq:queue:{name}
--   k=2 delayed zset        routemq:queue:{name}:delayed
--   k=3 reserved list       routemq:queue:{name}:reserved
--   k=4 leases zset         routemq:queue:{name}:leases
--   k=5 reservations hash   routemq:queue:{name}:reservations
--   k=6 notify list         routemq:queue:{name}:notify
--   k=7 transfer hash       routemq:queue:{name}:transfer
--   k=8 id index hash       routemq:queue:{name}:ids
-- then KEYS[#KEYS]         receipt string routemq:queue:pops:{first token} (one per call)
-- ARGV[1] retry_after     lease length in seconds
-- ARGV[2] batch           most delayed/expired jobs moved per queue per call
-- ARGV[3] receipt ttl     seconds the receipt is kept
-- ARGV[4] count           most jobs reserved by this call (n)
-- ARGV[5 .. 4+n]          one 32-hex-digit nonce per job: the i-th job reserved gets
--                         the i-th nonce as its fencing token (token.lua)
-- ARGV[5+n ..]            queue names, same order as the keys (unused by the script)
--
-- Guarantees, all in one atomic step on the server clock: exactly what n calls of
-- pop.lua with these nonces would do back to back (due delayed jobs and expired
-- leases requeued first; heads taken oldest first, the first queue before the
-- next; a second copy of a reserved job reserved as 'duplicate-<nonce>'; a
-- malformed entry as 'malformed-<sha1>'; every job its own lease, its own
-- reservations record and its own :reserved entry), so a prefetched job whose
-- worker dies comes back when ITS lease expires, like any other.
-- Idempotent per call: the receipt lists "<queue index>\t<token index>\t<kind>\t<held>\t<id>"
-- per job; a re-sent call (a lost reply) returns those of its reservations that
-- are still live and reserves nothing new.
-- Returns one string per job (one reply element each: cheap to parse):
-- "<queue index>\n<token index>\n<kind>\n<held>\n<job id>\n<payload>" (kind and
-- held as in pop.lua; ids never hold a newline, the payload comes last); when
-- nothing is available, {'', seconds until the earliest delayed job or lease
-- comes due ('' if none)}.
-- @include requeue_due.lua
-- @include envelope.lua
-- @include idle_reply.lua
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local retry_after = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local count = tonumber(ARGV[4])
local nqueues = (#KEYS - 1) / 8
local receipt_key = KEYS[#KEYS]

local receipt = redis.call('GET', receipt_key)
if receipt then
  local out = {}
  for q_index, t_index, kind, held, id in
      string.gmatch(receipt, '(%d+)\t(%d+)\t(%a*)\t([%d%.]*)\t([^\n]*)\n') do
    local q, i = tonumber(q_index), tonumber(t_index)
    local b = 8 * (q - 1)
    local stored = redis.call('HGET', KEYS[b + 5], id)
    local lease = redis.call('ZSCORE', KEYS[b + 4], id)
    local token = ARGV[4 + i]
    if holds_token(stored, token) and lease and tonumber(lease) >= now then
      out[#out + 1] = q .. '\n' .. i .. '\n' .. kind .. '\n' .. held .. '\n' .. id .. '\n'
        .. token_payload(stored)
    end
  end
  if #out > 0 then
    return out
  end
  return {'', ''}
end

for q = 1, nqueues do
  local b = 8 * (q - 1)
  requeue_due(KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], KEYS[b + 5], KEYS[b + 7],
    KEYS[b + 8], now, batch)
end

local out, lines = {}, {}
local lease_at = string.format('%.6f', now + retry_after)
local since = 'r:' .. string.format('%.6f', now)
local taken = 0
for q = 1, nqueues do
  local b = 8 * (q - 1)
  local pending, reservations, ids = KEYS[b + 1], KEYS[b + 5], KEYS[b + 8]
  while taken < count do
    -- Pop from the head: RPUSH appends at the tail, so the head is the oldest job.
    local payload = redis.call('LPOP', pending)
    if not payload then
      break
    end
    taken = taken + 1
    local token = ARGV[4 + taken]
    local digits, id = envelope_head(payload)
    local reserved_payload = payload
    local kind, held = '', ''
    if not digits then
      id = 'malformed-' .. redis.sha1hex(payload)
    end
    if redis.call('HEXISTS', reservations, id) == 1 then
      kind = 'duplicate'
      id = DUPLICATE_PREFIX .. token
    else
      if digits then
        reserved_payload = '{"attempts":' .. string.format('%d', tonumber(digits) + 1)
          .. string.sub(payload, 13 + #digits)
      end
      local state = redis.call('HGET', ids, id)
      if state and string.sub(state, 1, 2) == 'x:' then
        held = string.sub(state, 3)
      end
      redis.call('HSET', ids, id, since)
    end
    redis.call('RPUSH', KEYS[b + 3], reserved_payload)
    redis.call('ZADD', KEYS[b + 4], lease_at, id)
    redis.call('HSET', reservations, id, token .. ':' .. reserved_payload)
    lines[#lines + 1] = q .. '\t' .. taken .. '\t' .. kind .. '\t' .. held .. '\t' .. id .. '\n'
    out[#out + 1] = q .. '\n' .. taken .. '\n' .. kind .. '\n' .. held .. '\n' .. id .. '\n'
      .. reserved_payload
  end
  if taken > 0 and redis.call('LLEN', pending) == 0 then
    -- Tokens only stand for jobs that are gone: keep the list from growing.
    redis.call('DEL', KEYS[b + 6])
  end
  if taken >= count then
    break
  end
end

if taken > 0 then
  redis.call('SET', receipt_key, table.concat(lines), 'EX', ARGV[3])
  return out
end

return idle_reply(nqueues, now)
