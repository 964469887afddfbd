-- extend.lua: renew a lock key's ttl, only by its holder.
--
-- KEYS[1] lock key     routemq:coord:{name}
-- ARGV[1] token        the holder token that claimed it
-- ARGV[2] ttl          milliseconds from now the claim lasts
--
-- Guarantees: atomic; returns 1 and sets the expiry when ARGV[1] holds the
-- key, else 0 and no change (an expired claim is not revived).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
