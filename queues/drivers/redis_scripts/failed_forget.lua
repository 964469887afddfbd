-- failed_forget.lua: delete one failed record by its failed-store id.
--
-- KEYS[1 ..] failed lists     routemq:queue:failed:{name}, one per known queue
-- ARGV[1] record prefix       '{"id":"<failed id>",' (records start with their id)
--
-- Guarantees: atomic find-and-remove of at most one record. Returns 1 if a
-- record was removed, else 0.
local prefix = ARGV[1]
for _, key in ipairs(KEYS) do
  local records = redis.call('LRANGE', key, 0, -1)
  for _, record in ipairs(records) do
    if string.sub(record, 1, #prefix) == prefix then
      redis.call('LREM', key, 1, record)
      return 1
    end
  end
end
return 0
