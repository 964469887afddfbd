-- envelope.lua: included by pop.lua and take_for_transfer.lua.
--
-- envelope_head(payload) returns the attempts digits and the job id of a
-- payload that starts with the envelope prefix {"attempts":N,"id":"...", or
-- nil, nil. A job id is printable ASCII without '"' or '\' (as
-- queues/envelope.py requires; [0-9] and this set match Python's
-- _ENVELOPE_HEAD exactly), so the id a script fences is the id the client reads.
local function envelope_head(payload)
  local digits, id = string.match(payload, '^{"attempts":(%d+),"id":"([^"]+)"')
  if digits and not string.find(id, '[^\33-\126]') and not string.find(id, '\\', 1, true) then
    return digits, id
  end
  return nil, nil
end
