-- claim.lua: take a lock key for a holder unless a live holder has it.
--
-- KEYS[1] lock key     routemq:coord:{name}
-- ARGV[1] token        the claimant's holder token (a job id, a nonce)
-- ARGV[2] ttl          milliseconds the claim lasts (> 0)
--
-- Guarantees: atomic; returns the holder after the call: ARGV[1] when the key
-- was free (it is now held by ARGV[1] for ttl ms), else the live holder's
-- token, unchanged. An expired claim is gone (Redis expiry), so it never blocks.
local holder = redis.call('GET', KEYS[1])
if holder then
  return holder
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
