-- authorize: one admission decision for one request, atomically.
-- KEYS[1]  key record        aigw:key:{<key id>}        (hash)
-- KEYS[2]  request window    aigw:win:{<key id>}        (zset, score = µs)
-- KEYS[3]  period usage      aigw:usage:{<key id>}      (hash)
-- KEYS[4]  lease expiries    aigw:lease:{<key id>}      (zset, request id -> expiry ms)
-- KEYS[5]  lease amounts     aigw:leasev:{<key id>}     (hash, request id -> "tokens cost")
--          (the lease keys belong to the API key: swept here, deleted with it)
-- ARGV[1]  key hash (hex SHA-256 of the secret)
-- ARGV[2]  now in µs, or '' for Redis TIME
-- ARGV[3]  request id ('' when the caller gives none; needed to reserve)
-- ARGV[4]  estimated tokens, or '' for no estimate
-- ARGV[5]  estimated cost in micro-USD, or '' for no estimate
-- ARGV[6]  reservation lease in ms
-- Returns {code, key_id, workspace, project, environment, legacy,
--          rpm_limit, rpm_remaining, rpm_reset_ms,
--          token_limit, token_remaining, cost_limit, cost_remaining,
--          budget_reset_ms, retry_after_ms, reserved_tokens, reserved_cost}
--   code: 0 allowed, 3 unknown key, 4 disabled, 5 expired,
--         6 requests per minute, 7 token limit, 8 cost limit
--   a limit of -1 means "no such limit"; budget_reset_ms and
--   retry_after_ms are -1 when nothing resets; reserved_* are -1 when
--   nothing was reserved.
-- Budgets count usage + open reservations: every request needs usage +
-- reservations below the limit, and one with an estimate also needs usage +
-- reservations + its estimate to fit the limit.
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
local rsv_tok, rsv_cost, _, earliest_lease = open_reservations(KEYS[1], KEYS[4], KEYS[5], now_ms)
local request_id = ARGV[3]
local est_tok, est_cost = tonumber(ARGV[4]), tonumber(ARGV[5])
local budgeted = token_limit >= 0 or cost_limit >= 0
local reserving = budgeted and request_id ~= '' and (est_tok ~= nil or est_cost ~= nil)
if reserving and redis.call('ZSCORE', KEYS[4], request_id) then
  -- The same request asking again: its earlier reservation is replaced, not added.
  local t, c = lease_amounts(KEYS[5], request_id)
  if t and tonumber(redis.call('ZSCORE', KEYS[4], request_id)) > now_ms then
    rsv_tok, rsv_cost = rsv_tok - t, rsv_cost - c
  end
end

local budget_reset_ms = -1
if end_ms >= 0 then budget_reset_ms = end_ms - now_ms end

local function remaining(limit, used)
  if limit < 0 then return -1 end
  if used >= limit then return 0 end
  return limit - used
end

-- Does a budget refuse this request? A used-up budget refuses every request;
-- with an estimate the request must also fit whole. (A zero estimate admitted
-- at a used-up budget would overshoot it by whatever the request then uses.)
local function exhausted(limit, used, estimate)
  if limit < 0 then return false end
  if used >= limit then return true end
  return reserving and estimate ~= nil and used + estimate > limit
end

-- When a budget refuses: the next reset, or sooner if open reservations
-- (which may settle below their estimate) expire before it.
local function budget_retry_ms(used_alone, limit)
  if used_alone < limit and earliest_lease >= 0 then
    local wait = earliest_lease - now_ms
    if budget_reset_ms < 0 or wait < budget_reset_ms then return wait end
  end
  return budget_reset_ms
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
    token_limit, remaining(token_limit, tokens + rsv_tok),
    cost_limit, remaining(cost_limit, cost + rsv_cost),
    budget_reset_ms, retry_ms, -1, -1}
end

if exhausted(cost_limit, cost + rsv_cost, est_cost) then
  return denied(8, budget_retry_ms(cost, cost_limit), remaining(rpm, in_window), -1)
end
if exhausted(token_limit, tokens + rsv_tok, est_tok) then
  return denied(7, budget_retry_ms(tokens, token_limit), remaining(rpm, in_window), -1)
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

local reserved_tok, reserved_cost = -1, -1
if budgeted then
  sweep_leases(KEYS[1], KEYS[4], KEYS[5], now_ms)
end
if reserving then
  close_lease(KEYS[1], KEYS[4], KEYS[5], request_id)
  reserved_tok, reserved_cost = est_tok or 0, est_cost or 0
  local lease_ms = tonumber(ARGV[6])
  redis.call('ZADD', KEYS[4], fmt(now_ms + lease_ms), request_id)
  redis.call('HSET', KEYS[5], request_id, fmt(reserved_tok) .. ' ' .. fmt(reserved_cost))
  redis.call('HINCRBY', KEYS[1], 'rsv_tok', fmt(reserved_tok))
  redis.call('HINCRBY', KEYS[1], 'rsv_cost', fmt(reserved_cost))
  rsv_tok, rsv_cost = rsv_tok + reserved_tok, rsv_cost + reserved_cost
end

local rpm_remaining, rpm_reset = -1, -1
if rpm >= 0 then
  rpm_remaining = remaining(rpm, in_window + 1)
  rpm_reset = window_frees_in_ms(0)
end
return {0, kid, ws, proj, env, legacy, rpm, rpm_remaining, rpm_reset,
  token_limit, remaining(token_limit, tokens + rsv_tok),
  cost_limit, remaining(cost_limit, cost + rsv_cost),
  budget_reset_ms, -1, reserved_tok, reserved_cost}
