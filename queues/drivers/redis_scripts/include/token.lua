-- token.lua: included by reservation.lua and requeue_due.lua.
--
-- Every reservation has a fencing token unique to it, recorded in
-- reservations[id]: '<nonce>:' .. payload for a pop (the nonce of the pop call)
-- and 'transfer:<nonce>:' .. payload for a migration (take_for_transfer.lua),
-- where <nonce> is 32 hex digits new for every call. So a later reservation of
-- the same job never has the same token, even when its payload is byte-identical
-- (a release that undid its attempt). The :reserved list keeps the bare payload
-- (seed monitoring: LRANGE shows plain envelopes).
--
-- token_payload(token) is the bare payload of a token: the :reserved list entry
-- of that reservation, and what goes back to pending or delayed. A token
-- without such a prefix (a reservation made before tokens had nonces) is its
-- own payload.
local TOKEN_NONCE_LENGTH = 32
local TRANSFER_TAG = 'transfer:'

local function token_payload(token)
  local start = 1
  if string.sub(token, 1, #TRANSFER_TAG) == TRANSFER_TAG then
    start = #TRANSFER_TAG + 1
  end
  local colon = start + TOKEN_NONCE_LENGTH
  local nonce = string.sub(token, start, colon - 1)
  if #nonce == TOKEN_NONCE_LENGTH and not string.find(nonce, '%X')
      and string.sub(token, colon, colon) == ':' then
    return string.sub(token, colon + 1)
  end
  return token
end
