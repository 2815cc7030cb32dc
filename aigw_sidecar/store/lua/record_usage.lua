-- record_usage: count what one admitted request used, once per request id.
-- KEYS[1]  key record        aigw:key:{<key id>}    (hash)
-- KEYS[2]  period usage      aigw:usage:{<key id>}  (hash)
-- KEYS[3]  seen request ids  aigw:seen:{<key id>}   (zset, score = ms)
-- ARGV[1]  request id
-- ARGV[2]  prompt tokens      ARGV[3] completion tokens   ARGV[4] cost in micro-USD
-- ARGV[5]  now in µs, or '' for Redis TIME
-- ARGV[6]  how long a request id is remembered, in ms
-- Returns {code, period_tokens, period_cost}
--   code: 1 counted, 2 already counted (nothing changed), 0 unknown key
local rec = redis.call('HMGET', KEYS[1], 'kid', 'period', 'epoch')
if not rec[1] then
  return {0, 0, 0}
end
local now_ms = floor_div(clock_us(ARGV[5]), 1000)
local start_ms, end_ms = period_bounds(rec[2], now_ms)
local pid = period_id(rec[3], start_ms)
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  local tokens, cost = period_usage(KEYS[2], pid)
  return {2, tokens, cost}
end

open_period(KEYS[2], pid, end_ms, now_ms)
local total = tonumber(ARGV[2]) + tonumber(ARGV[3])
local tokens = redis.call('HINCRBY', KEYS[2], 'tokens', fmt(total))
local cost = redis.call('HINCRBY', KEYS[2], 'cost', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'pt', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'ct', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'lt_pt', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'lt_ct', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'lt_cost', ARGV[4])

local keep_ms = tonumber(ARGV[6])
redis.call('ZADD', KEYS[3], fmt(now_ms), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now_ms - keep_ms))
redis.call('PEXPIRE', KEYS[3], fmt(keep_ms))
return {1, tokens, cost}
