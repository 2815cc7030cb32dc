-- authorize: one admission decision for one request, atomically.
-- KEYS[1]  key record        aigw:key:{<key id>}        (hash)
-- KEYS[2]  request window    aigw:win:{<key id>}        (zset, score = µs)
-- KEYS[3]  period usage      aigw:usage:{<key id>}      (hash)
-- ARGV[1]  key hash (hex SHA-256 of the secret)
-- ARGV[2]  now in µs, or '' for Redis TIME
-- Returns {code, key_id, workspace, project, environment, legacy,
--          rpm_limit, rpm_remaining, rpm_reset_ms,
--          token_limit, token_remaining, cost_limit, cost_remaining,
--          budget_reset_ms, retry_after_ms}
--   code: 0 allowed, 3 unknown key, 4 disabled, 5 expired,
--         6 requests per minute, 7 token limit, 8 cost limit
--   a limit of -1 means "no such limit"; budget_reset_ms and
--   retry_after_ms are -1 when nothing resets.
-- Invariant: a denied request writes nothing: every counter stays untouched.
local rec = redis.call('HMGET', KEYS[1], 'hash', 'enabled', 'expires_at', 'cost_limit',
  'token_limit', 'rpm', 'period', 'epoch', 'kid', 'ws', 'proj', 'env', 'legacy')
if not rec[1] or rec[1] ~= ARGV[1] then
  return {3}
end
local now_us = clock_us(ARGV[2])
local now_ms = floor_div(now_us, 1000)
local kid, ws, proj, env, legacy = rec[9], rec[10], rec[11] or '', rec[12] or '', rec[13] or '0'
if rec[2] ~= '1' then
  return {4, kid, ws, proj, env, legacy}
end
if rec[3] and rec[3] ~= '' and tonumber(rec[3]) <= now_ms then
  return {5, kid, ws, proj, env, legacy}
end

local cost_limit = tonumber(rec[4]) or -1
local token_limit = tonumber(rec[5]) or -1
local rpm = tonumber(rec[6]) or -1
local start_ms, end_ms = period_bounds(rec[7], now_ms)
local pid = period_id(rec[8], start_ms)
local tokens, cost = period_usage(KEYS[3], pid)
local budget_reset_ms = -1
if end_ms >= 0 then budget_reset_ms = end_ms - now_ms end

local function remaining(limit, used)
  if limit < 0 then return -1 end
  if used >= limit then return 0 end
  return limit - used
end

-- Requests in the rolling window (now - 60 s, now]; nothing is trimmed yet,
-- so a denial leaves the window exactly as it was.
local since = now_us - WINDOW_US
local in_window = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(since), '+inf')

local function window_frees_in_ms(index)
  -- ms until the request at position `index` (0 = oldest) leaves the window
  local entry = redis.call('ZRANGE', KEYS[2], '(' .. fmt(since), '+inf', 'BYSCORE',
    'LIMIT', index, 1, 'WITHSCORES')
  if entry[2] == nil then return 0 end
  return math.ceil((tonumber(entry[2]) + WINDOW_US - now_us) / 1000)
end

local function denied(code, retry_ms, rpm_remaining, rpm_reset)
  return {code, kid, ws, proj, env, legacy, rpm, rpm_remaining, rpm_reset,
    token_limit, remaining(token_limit, tokens), cost_limit, remaining(cost_limit, cost),
    budget_reset_ms, retry_ms}
end

if cost_limit >= 0 and cost >= cost_limit then
  return denied(8, budget_reset_ms, remaining(rpm, in_window), -1)
end
if token_limit >= 0 and tokens >= token_limit then
  return denied(7, budget_reset_ms, remaining(rpm, in_window), -1)
end
if rpm >= 0 and in_window >= rpm then
  -- The window has room again when the (in_window - rpm + 1)-th oldest leaves.
  local wait = window_frees_in_ms(in_window - rpm)
  return denied(6, wait, 0, wait)
end

-- Admitted: now (and only now) write.
local seq = redis.call('HINCRBY', KEYS[1], 'wseq', 1)
redis.call('ZADD', KEYS[2], fmt(now_us), fmt(now_us) .. '-' .. seq)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(since))
redis.call('PEXPIRE', KEYS[2], 61000)
open_period(KEYS[3], pid, end_ms, now_ms)
redis.call('HINCRBY', KEYS[3], 'requests', 1)
redis.call('HINCRBY', KEYS[1], 'lt_req', 1)
redis.call('HSET', KEYS[1], 'last_used_at', fmt(now_ms))

local rpm_remaining, rpm_reset = -1, -1
if rpm >= 0 then
  rpm_remaining = remaining(rpm, in_window + 1)
  rpm_reset = window_frees_in_ms(0)
end
return {0, kid, ws, proj, env, legacy, rpm, rpm_remaining, rpm_reset,
  token_limit, remaining(token_limit, tokens), cost_limit, remaining(cost_limit, cost),
  budget_reset_ms, -1}
