-- reservation.lua: included by ack.lua, release.lua, extend.lua and fail.lua.
--
-- server_now() is the server clock in seconds (float): the same for every worker.
-- holds_lease(leases, reservations, id, token, now) is the fence: true only if
-- reservations[id] records exactly the reservation `token` (unique to one
-- reservation, see token.lua) and the lease has not expired.
-- drop_reservation(reserved, leases, reservations, transfer, id) removes every
-- trace of the reservation and returns the bare payload (as in the :reserved
-- list); the id index is left to the caller (ack/fail drop it, release requeues).
--
-- Settle receipts make a settle idempotent per call: the client re-sends a
-- script whose reply was lost (redis-py retry_on_error), and the re-sent call
-- must not report 0 for the change the first one made. settled(receipt) is
-- true if this call already succeeded; mark_settled(receipt, ttl) records the
-- success for `ttl` seconds (key routemq:queue:settles:{nonce}; on a cluster
-- routemq:queue:{name}:settles:<nonce>, in the queue's slot).
-- @include token.lua
-- @include id_index.lua
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function holds_lease(leases, reservations, id, token, now)
  if not holds_token(redis.call('HGET', reservations, id), token) then
    return false
  end
  local lease = redis.call('ZSCORE', leases, id)
  return lease ~= false and tonumber(lease) >= now
end

local function drop_reservation(reserved, leases, reservations, transfer, id)
  local payload = token_payload(redis.call('HGET', reservations, id))
  redis.call('LREM', reserved, 1, payload)
  redis.call('ZREM', leases, id)
  redis.call('HDEL', reservations, id)
  redis.call('HDEL', transfer, id)
  return payload
end

local function settled(receipt)
  return redis.call('EXISTS', receipt) == 1
end

local function mark_settled(receipt, ttl)
  redis.call('SET', receipt, '1', 'EX', ttl)
end

-- settle_verdict(receipt, leases, reservations, id, token, now) is the common
-- start of every settle script: 1 if this call already succeeded (its receipt
-- exists), 0 if the reservation is not live, nil to go on with the change.
local function settle_verdict(receipt, leases, reservations, id, token, now)
  if settled(receipt) then
    return 1
  end
  if not holds_lease(leases, reservations, id, token, now) then
    return 0
  end
  return nil
end
