-- contains.lua: is a job with this envelope id pending, delayed or reserved?
--
-- KEYS[1] pending list        routemq:queue:{name}
-- KEYS[2] delayed zset        routemq:queue:{name}:delayed
-- KEYS[3] reservations hash   routemq:queue:{name}:reservations
-- ARGV[1] job id
--
-- Guarantees: one consistent snapshot (atomic). Scans the whole queue: an
-- operator tool, not for hot paths. Returns 1 if found, else 0.
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  return 1
end
local function has(payloads)
  for _, payload in ipairs(payloads) do
    local id = string.match(payload, '^{"attempts":%d+,"id":"([^"]+)"')
    if id == ARGV[1] then
      return true
    end
  end
  return false
end
if has(redis.call('LRANGE', KEYS[1], 0, -1)) then
  return 1
end
if has(redis.call('ZRANGE', KEYS[2], 0, -1)) then
  return 1
end
return 0
