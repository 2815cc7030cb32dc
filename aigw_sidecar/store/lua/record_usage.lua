-- record_usage: count what one admitted request used, once per request id,
-- settling its reservation (charge the actual usage, release the rest).
-- KEYS[1]  key record        aigw:key:{<key id>}     (hash)
-- KEYS[2]  period usage      aigw:usage:{<key id>}   (hash)
-- KEYS[3]  seen request ids  aigw:seen:{<key id>}    (zset, score = ms)
-- KEYS[4]  lease expiries    aigw:lease:{<key id>}   (zset)
-- KEYS[5]  lease amounts     aigw:leasev:{<key id>}  (hash)
-- KEYS[6]  token window      aigw:tpm:{<key id>}     (zset; charged when the key has tokens per minute)
-- KEYS[7]  parallel slots    aigw:slot:{<key id>}    (zset; this request's slot is freed)
-- ARGV[1]  request id
-- ARGV[2]  prompt tokens      ARGV[3] completion tokens   ARGV[4] cost in micro-USD
-- ARGV[5]  now in µs, or '' for Redis TIME
-- ARGV[6]  how long a request id is remembered, in ms
-- ARGV[7]  model ('' when not given); usage is also split per model
-- ARGV[8]  '1' when the model had no price in the pricing table
-- Returns {code, period_tokens, period_cost, settled}
--   code: 1 counted, 2 already counted (nothing changed), 0 unknown key
--   settled: 1 when an open reservation of this request was settled
local MAX_MODELS = 64
local rec = redis.call('HMGET', KEYS[1], 'kid', 'period', 'epoch', 'tpm')
if not rec[1] then
  return {0, 0, 0, 0}
end
local now_us = clock_us(ARGV[5])
local now_ms = floor_div(now_us, 1000)
local start_ms, end_ms = period_bounds(rec[2], now_ms)
local pid = period_id(rec[3], start_ms)
local seen_at = redis.call('ZSCORE', KEYS[3], ARGV[1])
if seen_at and tonumber(seen_at) > now_ms - tonumber(ARGV[6]) then
  local tokens, cost = period_usage(KEYS[2], pid)
  return {2, tokens, cost, 0}
end

-- An expired lease is closed too, but it was no longer open: not settled.
local lease_end = redis.call('ZSCORE', KEYS[4], ARGV[1])
local settled = 0
if close_lease(KEYS[1], KEYS[4], KEYS[5], ARGV[1]) and lease_end
    and tonumber(lease_end) > now_ms then
  settled = 1
end
sweep_leases(KEYS[1], KEYS[4], KEYS[5], now_ms)
free_slot(KEYS[7], ARGV[1], now_ms)

open_period(KEYS[2], pid, end_ms, now_ms)
local total = tonumber(ARGV[2]) + tonumber(ARGV[3])
if rec[4] then
  -- The actual tokens enter the token window now; the estimate left with the lease.
  charge_token_window(KEYS[1], KEYS[6], now_us, total)
end
local tokens = redis.call('HINCRBY', KEYS[2], 'tokens', fmt(total))
local cost = redis.call('HINCRBY', KEYS[2], 'cost', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'pt', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'ct', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'lt_pt', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'lt_ct', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'lt_cost', ARGV[4])

local model = ARGV[7]
if model ~= '' then
  -- At most MAX_MODELS models per period; the rest are pooled as '(other)'.
  if redis.call('HEXISTS', KEYS[2], 'mn:' .. model) == 0 then
    if redis.call('HINCRBY', KEYS[2], 'models', 1) > MAX_MODELS then
      redis.call('HINCRBY', KEYS[2], 'models', -1)
      model = '(other)'
    end
  end
  redis.call('HINCRBY', KEYS[2], 'mn:' .. model, 1)
  redis.call('HINCRBY', KEYS[2], 'mt:' .. model, fmt(total))
  redis.call('HINCRBY', KEYS[2], 'mc:' .. model, ARGV[4])
end
if ARGV[8] == '1' then
  redis.call('HINCRBY', KEYS[2], 'unpriced', 1)
end

local keep_ms = tonumber(ARGV[6])
redis.call('ZADD', KEYS[3], fmt(now_ms), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', fmt(now_ms - keep_ms))
redis.call('PEXPIRE', KEYS[3], fmt(keep_ms))
return {1, tokens, cost, settled}
