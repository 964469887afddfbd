-- release.lua: give a reserved job back for another attempt, now or later.
--
-- KEYS[1] pending list        routemq:queue:{name}
-- KEYS[2] delayed zset        routemq:queue:{name}:delayed
-- KEYS[3] reserved list       routemq:queue:{name}:reserved
-- KEYS[4] leases zset         routemq:queue:{name}:leases
-- KEYS[5] reservations hash   routemq:queue:{name}:reservations
-- KEYS[6] notify list         routemq:queue:{name}:notify
-- KEYS[7] transfer hash       routemq:queue:{name}:transfer
-- KEYS[8] id index hash       routemq:queue:{name}:ids
-- KEYS[9] settle receipt      routemq:queue:settles:{nonce} (one per release call)
-- ARGV[1] job id
-- ARGV[2] token               the reservation's fencing token (its nonce, see token.lua)
-- ARGV[3] delay               seconds before the job is available again (the
--                             client caps it at MAX_DELAY_SECONDS)
-- ARGV[4] notify cap
-- ARGV[5] undo attempt        '1' to take back the attempt this reservation counted
-- ARGV[6] receipt ttl         seconds the settle receipt is kept
--
-- Guarantees: fenced like ack.lua. On success, in one step, the reservation is
-- removed and the payload (attempts as counted by its pop, or one less, never
-- below 0, with undo attempt) goes to the tail of pending (delay <= 0) or to
-- delayed scored now + delay; the id index says 'q' again; a blocked worker is
-- woken. The attempts count is rewritten by string matching on the envelope
-- prefix, like pop.lua (user data is never decoded). Returns 1 (receipt set),
-- or 0 with no change when the reservation is not live. A call re-sent after
-- its first run succeeded finds its receipt and returns 1 without giving the
-- job back a second time. The next reservation of the job has a new token
-- even if its payload is byte-identical (undo attempt), so this caller is
-- fenced out of it.
-- @include reservation.lua
local now = server_now()
local verdict = settle_verdict(KEYS[9], KEYS[4], KEYS[5], ARGV[1], ARGV[2], now)
if verdict ~= nil then
  return verdict
end
local payload = drop_reservation(KEYS[3], KEYS[4], KEYS[5], KEYS[7], ARGV[1])
index_requeue(KEYS[8], ARGV[1])
if ARGV[5] == '1' then
  local digits = string.match(payload, '^{"attempts":(%d+),"id":"')
  if digits then
    payload = '{"attempts":' .. string.format('%d', math.max(tonumber(digits) - 1, 0))
      .. string.sub(payload, 13 + #digits)
  end
end
local delay = tonumber(ARGV[3])
if delay > 0 then
  redis.call('ZADD', KEYS[2], string.format('%.6f', now + delay), payload)
else
  redis.call('RPUSH', KEYS[1], payload)
end
if redis.call('RPUSH', KEYS[6], '1') > tonumber(ARGV[4]) then
  redis.call('LTRIM', KEYS[6], -tonumber(ARGV[4]), -1)
end
mark_settled(KEYS[9], ARGV[6])
return 1
