-- pop.lua: reserve the oldest available job of the first non-empty queue.
--
-- For each queue q (in priority order) eight keys, KEYS[8*(q-1) + k]:
--   k=1 pending list        routemq:queue:{name}
--   k=2 delayed zset        routemq:queue:{name}:delayed      (score = due time)
--   k=3 reserved list       routemq:queue:{name}:reserved     (in-flight payloads)
--   k=4 leases zset         routemq:queue:{name}:leases       (job id -> lease expiry)
--   k=5 reservations hash   routemq:queue:{name}:reservations (job id -> token:payload)
--   k=6 notify list         routemq:queue:{name}:notify       (wake-up tokens)
--   k=7 transfer hash       routemq:queue:{name}:transfer     (job id -> due time, migrations)
--   k=8 id index hash       routemq:queue:{name}:ids          (job id -> state, id_index.lua)
-- then KEYS[#KEYS]         receipt string routemq:queue:pops:{nonce} (one per pop call;
--                           routemq:queue:{name}:pops:<nonce> on a cluster, one queue per call)
-- ARGV[1] retry_after     lease length in seconds
-- ARGV[2] batch           most delayed/expired jobs moved per queue per call
-- ARGV[3] receipt ttl     seconds the receipt is kept
-- ARGV[4] token           the pop call's 32-hex-digit nonce: the fencing token
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
--   appended to reserved, leased until now + retry_after, recorded in
--   reservations as ARGV[4] .. ':' .. payload (see token.lua: a later pop of the
--   same job has another nonce, even if its payload is byte-identical), and
--   the id index says 'r:<now>'; the receipt is set to
--   "<queue index>\n<sha1 of the record>\n<kind>\n<held>\n<job id>" with the ttl;
-- * a head entry whose id is already reserved (a second copy of a running job)
--   is never reserved under that id (the running copy's reservation and
--   :reserved entry stay its own): it is reserved unchanged under the id
--   'duplicate-<nonce>' with kind 'duplicate', so the worker moves it to the
--   failed store. A head payload that is not an envelope is reserved unchanged
--   under the id 'malformed-<sha1>' so the worker fails it with the reason.
-- Returns {queue name, payload, job id, kind, held}: kind is '' or 'duplicate';
-- held is '' or the seconds the job's previous attempt stayed unsettled before
-- its lease expired (id index 'x:<secs>'). When nothing is available returns
-- {'', seconds until the earliest delayed job or lease comes due ('' if none)}.
-- @include requeue_due.lua
-- @include envelope.lua
-- @include idle_reply.lua
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local retry_after = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local token = ARGV[4]
local nqueues = (#KEYS - 1) / 8
local receipt_key = KEYS[#KEYS]

local receipt = redis.call('GET', receipt_key)
if receipt then
  local index, digest, kind, held, receipt_id =
    string.match(receipt, '^(%d+)\n(%x+)\n(%a*)\n([%d%.]*)\n(.*)$')
  local q = tonumber(index)
  if q and q >= 1 and q <= nqueues then
    local b = 8 * (q - 1)
    local stored = redis.call('HGET', KEYS[b + 5], receipt_id)
    local lease = redis.call('ZSCORE', KEYS[b + 4], receipt_id)
    if stored and lease and tonumber(lease) >= now and redis.sha1hex(stored) == digest then
      return {ARGV[4 + q], token_payload(stored), receipt_id, kind, held}
    end
  end
end

for q = 1, nqueues do
  local b = 8 * (q - 1)
  requeue_due(KEYS[b + 1], KEYS[b + 2], KEYS[b + 3], KEYS[b + 4], KEYS[b + 5], KEYS[b + 7],
    KEYS[b + 8], now, batch)
end

for q = 1, nqueues do
  local b = 8 * (q - 1)
  local pending, reservations, ids = KEYS[b + 1], KEYS[b + 5], KEYS[b + 8]
  -- Pop from the head: RPUSH appends at the tail, so the head is the oldest job.
  local payload = redis.call('LPOP', pending)
  if payload then
    local digits, id = envelope_head(payload)
    local reserved_payload = payload
    local kind, held = '', ''
    if not digits then
      -- Not an envelope of ours (written by hand?): reserve it unchanged under a
      -- synthetic id so the worker moves it to the failed store with the reason,
      -- instead of the queue being blocked behind it.
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
      redis.call('HSET', ids, id, 'r:' .. string.format('%.6f', now))
    end
    redis.call('RPUSH', KEYS[b + 3], reserved_payload)
    redis.call('ZADD', KEYS[b + 4], string.format('%.6f', now + retry_after), id)
    local stored = token .. ':' .. reserved_payload
    redis.call('HSET', reservations, id, stored)
    redis.call('SET', receipt_key,
      q .. '\n' .. redis.sha1hex(stored) .. '\n' .. kind .. '\n' .. held .. '\n' .. id,
      'EX', ARGV[3])
    if redis.call('LLEN', pending) == 0 then
      -- Tokens only stand for jobs that are gone: keep the list from growing.
      redis.call('DEL', KEYS[b + 6])
    end
    return {ARGV[4 + q], reserved_payload, id, kind, held}
  end
end

return idle_reply(nqueues, now)
