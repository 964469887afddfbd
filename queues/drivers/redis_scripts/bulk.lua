-- bulk.lua: add many jobs, in order, in one atomic step.
--
-- KEYS[1]                 known queues set routemq:queues; KEYS[2] again in cluster
--                         mode (one queue per call; the client keeps that set itself)
-- KEYS[2 + 4*(q-1)]       pending list of the q-th distinct queue
-- KEYS[3 + 4*(q-1)]       delayed zset of the q-th distinct queue
-- KEYS[4 + 4*(q-1)]       notify list of the q-th distinct queue
-- KEYS[5 + 4*(q-1)]       id index hash of the q-th distinct queue
-- ARGV[1]                 notify cap
-- ARGV[2]                 number of distinct queues Q
-- ARGV[3 .. 2+Q]          distinct queue names, in the order of their keys
-- then quadruples         queue index q (1-based), delay seconds, job id, payload
--
-- Guarantees: all jobs are added or none (a script is atomic); jobs of one
-- queue keep their given order; delayed ones are scored by the server clock;
-- a job whose id is already in its queue (id index) is not added again.
-- Returns the number of jobs added.
-- @include id_index.lua
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap = tonumber(ARGV[1])
local nqueues = tonumber(ARGV[2])
if KEYS[1] ~= KEYS[2] then
  for q = 1, nqueues do
    redis.call('SADD', KEYS[1], ARGV[2 + q])
  end
end
local touched = {}
local i = 3 + nqueues
local added = 0
while i + 3 <= #ARGV do
  local q = tonumber(ARGV[i])
  local delay = tonumber(ARGV[i + 1])
  local payload = ARGV[i + 3]
  local base = 2 + 4 * (q - 1)
  if index_add(KEYS[base + 3], ARGV[i + 2]) then
    if delay > 0 then
      redis.call('ZADD', KEYS[base + 1], string.format('%.6f', now + delay), payload)
    else
      redis.call('RPUSH', KEYS[base], payload)
    end
    touched[q] = (touched[q] or 0) + 1
    added = added + 1
  end
  i = i + 4
end
-- One wake-up token per added job (at most `cap`), so as many blocked
-- workers wake as there are new jobs.
for q, count in pairs(touched) do
  local notify = KEYS[2 + 4 * (q - 1) + 2]
  for _ = 1, math.min(count, cap) do
    redis.call('RPUSH', notify, '1')
  end
  redis.call('LTRIM', notify, -cap, -1)
end
return added
