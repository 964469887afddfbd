-- reservation.lua: included by ack.lua, release.lua, extend.lua and fail.lua.
--
-- server_now() is the server clock in seconds (float): the same for every worker.
-- holds_lease(leases, reservations, id, token, now) is the fence: true only if
-- reservations[id] is exactly `token` (the payload as reserved, which carries
-- the attempt count, so a later pop of the same job differs; a migration's
-- token is 'transfer:<nonce>:' .. payload, see transfer_token.lua) and the
-- lease has not expired. drop_reservation(reserved, leases, reservations,
-- transfer, id, token) removes every trace of the reservation and returns the
-- bare payload (as in the :reserved list).
-- @include transfer_token.lua
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function holds_lease(leases, reservations, id, token, now)
  if redis.call('HGET', reservations, id) ~= token then
    return false
  end
  local lease = redis.call('ZSCORE', leases, id)
  return lease ~= false and tonumber(lease) >= now
end

local function drop_reservation(reserved, leases, reservations, transfer, id, token)
  local payload = reserved_payload(transfer, id, token)
  redis.call('LREM', reserved, 1, payload)
  redis.call('ZREM', leases, id)
  redis.call('HDEL', reservations, id)
  redis.call('HDEL', transfer, id)
  return payload
end
