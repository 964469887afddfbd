-- failed_find.lua: look for one failed record, one bounded window at a time.
--
-- KEYS[1] failed list         routemq:queue:failed:{name} (oldest at the head)
-- ARGV[1] offset              records already scanned, counted from the tail
-- ARGV[2] window              most records read by this call
-- ARGV[3] failed id           the record's own id ('' to look by job id only)
-- ARGV[4] job id              the id in the record's payload envelope ('' for none)
--
-- Scans the window newest first (from the tail) for a record whose own id is
-- ARGV[3] or whose payload envelope ({"attempts":N,"id":"..."}) has the id
-- ARGV[4]. Records are our own JSON, `{"id":...,"connection":...,"queue":...,
-- "payload":...}` in that order (RedisFailedStore.record), so both are read by
-- position, never by decoding. Reads at most ARGV[2] records: a call never holds
-- Redis for long, whatever the list's length.
-- Returns {0-based index, record} for the first match, {-1, next offset} when
-- the window had none and older records remain, or {-2} when the list is done.
local length = redis.call('LLEN', KEYS[1])
local offset = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
if offset >= length then
  return {-2}
end
local first = math.max(length - offset - window, 0)
local last = length - offset - 1
local records = redis.call('LRANGE', KEYS[1], first, last)
local id_prefix = '{"id":"' .. ARGV[3] .. '",'
local payload_key = '"payload":"{\\"attempts\\":'
for i = #records, 1, -1 do
  local record = records[i]
  if ARGV[3] ~= '' and string.sub(record, 1, #id_prefix) == id_prefix then
    return {first + i - 1, record}
  end
  if ARGV[4] ~= '' then
    local at = string.find(record, payload_key, 1, true)
    if at then
      local head = string.sub(record, at + #payload_key, at + #payload_key + #ARGV[4] + 40)
      if string.match(head, '^%d+,\\"id\\":\\"([^\\"]*)\\"') == ARGV[4] then
        return {first + i - 1, record}
      end
    end
  end
end
if first == 0 then
  return {-2}
end
return {-1, offset + #records}
