-- token.lua: included by reservation.lua and requeue_due.lua.
--
-- Every reservation has a fencing token unique to it: the 32-hex-digit nonce
-- of the pop call that made it, or 'transfer:' .. nonce for a migration
-- (take_for_transfer.lua). The client holds the job id and that token only,
-- and sends nothing else to settle (never the payload). The server records
-- reservations[id] = token .. ':' .. payload: the token, and the exact bytes
-- this reservation appended to :reserved, which a settle must remove (LREM
-- needs the bytes; the :reserved list keeps bare payloads, seed monitoring).
--
-- token_payload(stored) is the payload part of such a record: the :reserved
-- entry of that reservation, and what goes back to pending or delayed. A record
-- without a token prefix (a reservation made before tokens had nonces) is its
-- own payload. holds_token(stored, token) is true if the record belongs to the
-- reservation `token`.
local TOKEN_NONCE_LENGTH = 32
local TRANSFER_TAG = 'transfer:'

local function token_payload(stored)
  local start = 1
  if string.sub(stored, 1, #TRANSFER_TAG) == TRANSFER_TAG then
    start = #TRANSFER_TAG + 1
  end
  local colon = start + TOKEN_NONCE_LENGTH
  local nonce = string.sub(stored, start, colon - 1)
  if #nonce == TOKEN_NONCE_LENGTH and not string.find(nonce, '%X')
      and string.sub(stored, colon, colon) == ':' then
    return string.sub(stored, colon + 1)
  end
  return stored
end

local function holds_token(stored, token)
  return stored ~= false and stored ~= nil and #token > 0
    and string.sub(stored, 1, #token + 1) == token .. ':'
end
