-- failed_remove.lua: delete given failed records, each only if it is still there.
--
-- KEYS[1] failed list         routemq:queue:failed:{name}
-- KEYS[2] failed queues set   routemq:queues:failed; KEYS[1] again in cluster mode,
--                             where the client keeps that set (and never shrinks it)
-- ARGV[1] tombstone           a value new to this call (marks records to delete)
-- ARGV[2] queue name
-- ARGV[3 ..] pairs            0-based index, sha1 of the record read at that index
--
-- Guarantees, atomically: each record whose index still holds exactly the bytes
-- read (same sha1) is deleted; a record that moved or changed is left (the
-- caller reads again). The marked records are removed by one LREM from the
-- nearer end of the list, so a call costs its pairs plus the distance to that
-- end. The queue leaves the failed queues set when its list is empty.
-- Returns the number of records deleted.
local marked = 0
local length = redis.call('LLEN', KEYS[1])
local highest = 0
for i = 3, #ARGV - 1, 2 do
  local index = tonumber(ARGV[i])
  local record = redis.call('LINDEX', KEYS[1], index)
  if record and redis.sha1hex(record) == ARGV[i + 1] then
    redis.call('LSET', KEYS[1], index, ARGV[1])
    marked = marked + 1
    highest = math.max(highest, index)
  end
end
if marked > 0 then
  if highest < length / 2 then
    redis.call('LREM', KEYS[1], marked, ARGV[1])
  else
    redis.call('LREM', KEYS[1], -marked, ARGV[1])
  end
end
if redis.call('LLEN', KEYS[1]) == 0 then
  if KEYS[2] ~= KEYS[1] then
    redis.call('SREM', KEYS[2], ARGV[2])
  end
end
return marked
