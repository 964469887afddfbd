-- transfer_token.lua: included by reservation.lua and requeue_due.lua.
--
-- A migration (take_for_transfer.lua) reserves a job under its own token
-- 'transfer:<hex nonce>:' .. payload, recorded in reservations[id], and always
-- writes transfer[id] (the job's due time). The worker whose lease expired held
-- the bare payload as its token, so it is fenced out. The :reserved list keeps
-- the bare payload (seed monitoring: LRANGE shows payloads).
-- reserved_payload(transfer, id, token) is the :reserved list entry (and the
-- payload to requeue) of the reservation `token` of job `id`. A transfer token
-- is recognised only when transfer[id] exists, so a hand-written payload that
-- happens to start with 'transfer:' is never cut.
local function reserved_payload(transfer, id, token)
  if redis.call('HEXISTS', transfer, id) == 1 then
    local payload = string.match(token, '^transfer:%x+:(.*)$')
    if payload then
      return payload
    end
  end
  return token
end
