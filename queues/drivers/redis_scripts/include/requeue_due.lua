-- requeue_due.lua: included by pop.lua and take_for_transfer.lua (`-- @include requeue_due.lua`).
--
-- requeue_due(pending, delayed, reserved, leases, reservations, transfer, now, batch)
-- moves, for one queue, at most `batch` due delayed jobs to the tail of pending
-- in due order, and at most `batch` reserved jobs whose lease expired back to
-- pending with their attempts already counted (a migration's delayed job goes
-- back to delayed). What goes back is always the bare payload (token_payload),
-- never a token. It runs inside the including script, so it is atomic with it.
-- @include token.lua
local function requeue_due(pending, delayed, reserved, leases, reservations, transfer, now, batch)
  local now_s = string.format('%.6f', now)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_s, 'LIMIT', 0, batch)
  if #due > 0 then
    redis.call('ZREM', delayed, unpack(due))
    redis.call('RPUSH', pending, unpack(due))
  end

  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. now_s, 'LIMIT', 0, batch)
  for _, id in ipairs(expired) do
    local token = redis.call('HGET', reservations, id)
    redis.call('ZREM', leases, id)
    redis.call('HDEL', reservations, id)
    if token then
      local payload = token_payload(token)
      redis.call('LREM', reserved, 1, payload)
      local due_at = redis.call('HGET', transfer, id)
      if due_at and tonumber(due_at) > now then
        redis.call('ZADD', delayed, due_at, payload)
      else
        redis.call('RPUSH', pending, payload)
      end
    end
    redis.call('HDEL', transfer, id)
  end
end
