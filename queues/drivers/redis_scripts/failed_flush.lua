-- failed_flush.lua: delete failed records, all of them or those older than a cutoff.
--
-- KEYS[1 ..] failed lists     routemq:queue:failed:{name}, one per known queue
-- ARGV[1] older_than_seconds  '' to delete everything, else an age in seconds
--
-- Guarantees: atomic. Age is measured on the server clock against each
-- record's failed_at (records are our own JSON, so decoding them to read one
-- number is safe; they are never re-encoded). Returns the count deleted.
local deleted = 0
if ARGV[1] == '' then
  for _, key in ipairs(KEYS) do
    deleted = deleted + redis.call('LLEN', key)
    redis.call('DEL', key)
  end
  return deleted
end
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) + tonumber(t[2]) / 1000000 - tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local records = redis.call('LRANGE', key, 0, -1)
  for _, record in ipairs(records) do
    local ok, decoded = pcall(cjson.decode, record)
    if ok and type(decoded) == 'table' and tonumber(decoded['failed_at'])
        and tonumber(decoded['failed_at']) < cutoff then
      deleted = deleted + redis.call('LREM', key, 1, record)
    end
  end
end
return deleted
