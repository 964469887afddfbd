-- requeue_due.lua: included by pop.lua and take_for_transfer.lua (`-- @include requeue_due.lua`).
--
-- requeue_due(pending, delayed, reserved, leases, reservations, transfer, ids, now, batch)
-- moves, for one queue, at most `batch` due delayed jobs to the tail of pending
-- in due order, and at most `batch` reserved jobs whose lease expired back to
-- pending with their attempts already counted (a migration's delayed job goes
-- back to delayed). What goes back is always the bare payload (token_payload),
-- never a token. A worker's expired attempt is marked in the id index as
-- 'x:<seconds it stayed unsettled>' (reserve time to lease end). It runs inside
-- the including script, so it is atomic with it.
-- @include token.lua
-- @include id_index.lua
local function requeue_due(pending, delayed, reserved, leases, reservations, transfer, ids, now, batch)
  local now_s = string.format('%.6f', now)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_s, 'LIMIT', 0, batch)
  if #due > 0 then
    redis.call('ZREM', delayed, unpack(due))
    redis.call('RPUSH', pending, unpack(due))
  end

  local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. now_s, 'WITHSCORES',
    'LIMIT', 0, batch)
  for i = 1, #expired, 2 do
    local id, lease_end = expired[i], tonumber(expired[i + 1])
    local stored = redis.call('HGET', reservations, id)
    redis.call('ZREM', leases, id)
    redis.call('HDEL', reservations, id)
    if stored then
      local payload = token_payload(stored)
      redis.call('LREM', reserved, 1, payload)
      local due_at = redis.call('HGET', transfer, id)
      if due_at and tonumber(due_at) > now then
        redis.call('ZADD', delayed, due_at, payload)
      else
        redis.call('RPUSH', pending, payload)
      end
    end
    local state = redis.call('HGET', ids, id)
    if state and string.sub(state, 1, 2) == 'r:' then
      local held = math.max(lease_end - tonumber(string.sub(state, 3)), 0)
      redis.call('HSET', ids, id, 'x:' .. string.format('%.3f', held))
    elseif state then
      index_requeue(ids, id)
    end
    redis.call('HDEL', transfer, id)
  end
end
