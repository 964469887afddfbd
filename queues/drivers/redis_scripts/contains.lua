-- contains.lua: is a job with this envelope id pending, delayed or reserved?
--
-- KEYS[1] id index hash       routemq:queue:{name}:ids
-- KEYS[2] reservations hash   routemq:queue:{name}:reservations
-- ARGV[1] job id
--
-- Guarantees: one consistent snapshot (atomic), O(1): two HEXISTS, whatever
-- the queue's length. Sees every job added by push/later/bulk and every
-- reserved one; an entry written by hand is seen once a pop or migration has
-- reserved it (see include/id_index.lua). Returns 1 if found, else 0.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 1
end
return redis.call('HEXISTS', KEYS[2], ARGV[1])
