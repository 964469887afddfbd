-- idle_reply.lua: included by pop.lua and pop_many.lua.
--
-- idle_reply(nqueues, now) is the reply of a pop that found no job ready in any
-- of its nqueues queues (8 KEYS per queue, as both scripts lay them out). It
-- deletes each queue's notify tokens (KEYS[b + 6]: no token may stand for a job
-- that is not there) and returns {'', seconds until the earliest delayed job or
-- lease is due}, or {'', ''} when nothing is due, so the client knows how long
-- it may block.
local function idle_reply(nqueues, now)
  local earliest = nil
  for q = 1, nqueues do
    local b = 8 * (q - 1)
    redis.call('DEL', KEYS[b + 6])
    for _, key in ipairs({KEYS[b + 2], KEYS[b + 4]}) do
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if first[2] then
        local at = tonumber(first[2])
        if earliest == nil or at < earliest then
          earliest = at
        end
      end
    end
  end
  if earliest == nil then
    return {'', ''}
  end
  return {'', string.format('%.6f', math.max(earliest - now, 0))}
end
