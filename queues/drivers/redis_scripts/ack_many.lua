-- ack_many.lua: delete several finished jobs of ONE queue, each only while its reservation is live.
--
-- KEYS[1] reserved list       routemq:queue:{name}:reserved
-- KEYS[2] leases zset         routemq:queue:{name}:leases
-- KEYS[3] reservations hash   routemq:queue:{name}:reservations
-- KEYS[4] transfer hash       routemq:queue:{name}:transfer
-- KEYS[5] id index hash       routemq:queue:{name}:ids
-- KEYS[6] settle receipt      routemq:queue:settles:{nonce} (one per ack_many call)
-- KEYS[7 ..] job status       routemq:queue:{name}:status:{job id}, one per job, in
--                             job order (include/job_status.lua)
-- ARGV[1] receipt ttl         seconds the settle receipt is kept
-- ARGV[2] status ttl          seconds a status stays readable (JOB_STATUS_RETENTION)
-- ARGV[3 ..]                  triples: job id, token (the reservation's fencing
--                             token), status record ('' writes none)
--
-- Guarantees: for each pair, exactly what ack.lua does for it, in one atomic
-- step: a job whose reservation records this token and whose lease has not
-- expired (server clock) leaves reserved, leases, reservations, transfer and the
-- id index and gets its final status ('1'); any other is left unchanged ('0'),
-- so a worker whose lease ran out never deletes the job of its new owner. Returns the string of '1'/'0'
-- verdicts in pair order, which the receipt keeps: a call re-sent after a lost
-- reply returns the first run's verdicts and changes nothing.
-- @include reservation.lua
-- @include job_status.lua
local receipt = redis.call('GET', KEYS[6])
if receipt then
  return receipt
end
local now = server_now()
local verdicts = {}
local job = 0
for i = 3, #ARGV, 3 do
  local id, token = ARGV[i], ARGV[i + 1]
  job = job + 1
  if holds_lease(KEYS[2], KEYS[3], id, token, now) then
    drop_reservation(KEYS[1], KEYS[2], KEYS[3], KEYS[4], id)
    index_drop(KEYS[5], id)
    write_status(KEYS[6 + job], ARGV[i + 2], ARGV[2], now)
    verdicts[#verdicts + 1] = '1'
  else
    verdicts[#verdicts + 1] = '0'
  end
end
local result = table.concat(verdicts)
redis.call('SET', KEYS[6], result, 'EX', ARGV[1])
return result
