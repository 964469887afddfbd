-- release.lua: give a lock key back, only by its holder.
--
-- KEYS[1] lock key     routemq:coord:{name}
-- ARGV[1] token        the holder token that claimed it
--
-- Guarantees: atomic; deletes the key and returns 1 only when ARGV[1] holds
-- it; returns 0 and changes nothing otherwise (expired, or another holder's).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
