-- ack.lua: delete a finished job, only while the caller's reservation is live.
--
-- KEYS[1] reserved list       routemq:queue:{name}:reserved
-- KEYS[2] leases zset         routemq:queue:{name}:leases
-- KEYS[3] reservations hash   routemq:queue:{name}:reservations
-- KEYS[4] transfer hash       routemq:queue:{name}:transfer
-- KEYS[5] id index hash       routemq:queue:{name}:ids
-- KEYS[6] settle receipt      routemq:queue:settles:{nonce} (one per ack call)
-- KEYS[7] job status          routemq:queue:{name}:status:{job id} (include/job_status.lua)
-- ARGV[1] job id
-- ARGV[2] token               the reservation's fencing token (its nonce, see token.lua)
-- ARGV[3] receipt ttl         seconds the settle receipt is kept
-- ARGV[4] status record       the job's final status without its time ('' writes none)
-- ARGV[5] status ttl          seconds the status stays readable (JOB_STATUS_RETENTION)
--
-- Guarantees: if reservations[id] records this token and the lease has not
-- expired (server clock), the job leaves reserved, leases, reservations,
-- transfer and the id index, the receipt is set, and 1 is returned. Otherwise
-- (stale or unknown reservation) nothing changes and 0 is returned, so a worker
-- whose lease ran out can never delete the job of its new owner. A call re-sent
-- after its first run succeeded finds its receipt and returns 1 without
-- changing anything. The job's final status is written in the same step.
-- @include reservation.lua
-- @include job_status.lua
local now = server_now()
local verdict = settle_verdict(KEYS[6], KEYS[2], KEYS[3], ARGV[1], ARGV[2], now)
if verdict ~= nil then
  return verdict
end
drop_reservation(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
index_drop(KEYS[5], ARGV[1])
write_status(KEYS[7], ARGV[4], ARGV[5], now)
mark_settled(KEYS[6], ARGV[3])
return 1
