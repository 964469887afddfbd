-- failed_flush.lua: delete a queue's failed records, all or those older than a cutoff.
--
-- KEYS[1] failed list         routemq:queue:failed:{name}
-- KEYS[2] failed queues set   routemq:queues:failed; KEYS[1] again in cluster mode,
--                             where the client keeps that set (and never shrinks it)
-- ARGV[1] queue name
-- ARGV[2] older_than_seconds  '' to delete every record, else an age in seconds
-- ARGV[3] start               0-based index where this window starts
-- ARGV[4] window              most records examined by this call
-- ARGV[5] tombstone           a value new to this call
--
-- Everything: the list is UNLINKed (freed off the main thread, O(1) here).
-- With a cutoff: the records of one window are examined; those whose failed_at
-- (server clock) is older than the cutoff are deleted. failed_at is read from
-- the record's end (`"failed_at":N}`, RedisFailedStore.record), never by
-- decoding the record; a record without it is kept. A call reads at most
-- ARGV[4] records, so it never holds Redis for long; the caller goes on from
-- the returned start. The queue leaves the failed queues set when its list is
-- empty. Returns {deleted, next start, or -1 when the list is done}.
if ARGV[2] == '' then
  local count = redis.call('LLEN', KEYS[1])
  redis.call('UNLINK', KEYS[1])
  if KEYS[2] ~= KEYS[1] then
    redis.call('SREM', KEYS[2], ARGV[1])
  end
  return {count, -1}
end
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) + tonumber(t[2]) / 1000000 - tonumber(ARGV[2])
local start = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local records = redis.call('LRANGE', KEYS[1], start, start + window - 1)
local marked = 0
for i, record in ipairs(records) do
  local failed_at = tonumber(string.match(string.sub(record, -48), '"failed_at":([%d%.eE%+%-]+)}$'))
  if failed_at and failed_at < cutoff then
    redis.call('LSET', KEYS[1], start + i - 1, ARGV[5])
    marked = marked + 1
  end
end
if marked > 0 then
  redis.call('LREM', KEYS[1], marked, ARGV[5])
end
local length = redis.call('LLEN', KEYS[1])
if length == 0 then
  if KEYS[2] ~= KEYS[1] then
    redis.call('SREM', KEYS[2], ARGV[1])
  end
end
local next_start = start + #records - marked
if #records < window or next_start >= length then
  return {marked, -1}
end
return {marked, next_start}
