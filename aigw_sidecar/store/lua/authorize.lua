-- authorize: one admission decision for one request, atomically.
-- KEYS[1]  key record        aigw:key:{<key id>}        (hash)
-- KEYS[2]  request window    aigw:win:{<key id>}        (zset, score = µs)
-- KEYS[3]  period usage      aigw:usage:{<key id>}      (hash)
-- KEYS[4]  lease expiries    aigw:lease:{<key id>}      (zset, request id -> expiry ms)
-- KEYS[5]  lease amounts     aigw:leasev:{<key id>}     (hash, request id -> "tokens cost")
--          (the lease keys belong to the API key: swept here, deleted with it)
-- KEYS[6]  token window      aigw:tpm:{<key id>}        (zset, score = µs, '<µs>-<seq>:<tokens>')
-- KEYS[7]  parallel slots    aigw:slot:{<key id>}       (zset, request id -> lease expiry ms)
-- KEYS[8]  seen request ids  aigw:seen:{<key id>}       (zset; ids record_usage counted)
-- ARGV[1]  key hash (hex SHA-256 of the secret)
-- ARGV[2]  now in µs, or '' for Redis TIME
-- ARGV[3]  request id ('' when the caller gives none; needed to reserve)
-- ARGV[4]  estimated tokens, or '' for no estimate
-- ARGV[5]  estimated cost in micro-USD, or '' for no estimate
-- ARGV[6]  reservation (and parallel slot) lease in ms
-- ARGV[7]  model the request uses ('' when unknown), checked against allowed models
-- ARGV[8]  '1' when that model has no price: refused on a key with a cost limit
-- Returns {code, key_id, workspace, project, environment, legacy,
--          rpm_limit, rpm_remaining, rpm_reset_ms,
--          token_limit, token_remaining, cost_limit, cost_remaining,
--          budget_reset_ms, retry_after_ms, reserved_tokens, reserved_cost,
--          tpm_limit, tpm_remaining, tpm_reset_ms, parallel_limit,
--          parallel_remaining, slot_held}
--   code: 0 allowed, 3 unknown key, 4 disabled, 5 expired,
--         6 requests per minute, 7 token limit, 8 cost limit,
--         9 tokens per minute, 10 parallel requests, 11 model not allowed,
--         12 the request id was already settled by a usage report (a caller
--            error: its new usage would be ignored as a retry),
--         13 model not priced (a key with a cost limit, a model without a price)
--   (4, 5, 11, 12 and 13 return the identity only)
--   a limit of -1 means "no such limit"; budget_reset_ms and
--   retry_after_ms are -1 when nothing resets; reserved_* are -1 when
--   nothing was reserved.
-- Budgets count usage + open reservations: every request needs usage +
-- reservations below the limit, and one with an estimate also needs usage +
-- reservations + its estimate to fit the limit.
-- Tokens per minute counts the token window plus open reservations (estimates
-- of requests in flight), checked like a budget. The previous secret of a
-- rotation is accepted until its 'prev_until' (exclusive).
-- Invariant: a denied request writes nothing: every counter stays untouched.
local now_us = clock_us(ARGV[2])
local now_ms = floor_div(now_us, 1000)
local now_s = floor_div(now_ms, 1000)
local slot_field = ring_field(now_s)
local rec = redis.call('HMGET', KEYS[1], 'hash', 'enabled', 'expires_at', 'cost_limit',
  'token_limit', 'rpm', 'period', 'epoch', 'kid', 'ws', 'proj', 'env', 'legacy',
  'tpm', 'maxpar', 'models', 'prev_hash', 'prev_until', 'rsv_tok', 'rsv_cost',
  'lt_req', slot_field)
if not rec[1] then
  return {3}
end
if rec[1] ~= ARGV[1] and not (rec[17] == ARGV[1] and (tonumber(rec[18]) or 0) > now_ms) then
  return {3}
end
local kid, ws, proj, env, legacy = rec[9], rec[10], rec[11] or '', rec[12] or '', rec[13] or '0'
if rec[2] ~= '1' then
  return {4, kid, ws, proj, env, legacy}
end
if rec[3] and rec[3] ~= '' and tonumber(rec[3]) <= now_ms then
  return {5, kid, ws, proj, env, legacy}
end
if ARGV[3] ~= '' and redis.call('ZSCORE', KEYS[8], ARGV[3]) then
  return {12, kid, ws, proj, env, legacy}
end

-- Does the model match a line of the allow-list? A line is a name, or a
-- pattern where '*' matches any run of characters. Only plain string.find is
-- used, never Lua patterns: no other character of a model or a line is special.
local function glob_match(text, pattern)
  local parts, from = {}, 1
  while true do
    local star = string.find(pattern, '*', from, true)
    if not star then
      parts[#parts + 1] = string.sub(pattern, from)
      break
    end
    parts[#parts + 1] = string.sub(pattern, from, star - 1)
    from = star + 1
  end
  if #parts == 1 then return text == pattern end
  local first, last = parts[1], parts[#parts]
  if #text < #first + #last or string.sub(text, 1, #first) ~= first then return false end
  if #last > 0 and string.sub(text, -#last) ~= last then return false end
  local pos, stop = #first + 1, #text - #last
  for i = 2, #parts - 1 do
    if #parts[i] > 0 then
      local a, b = string.find(text, parts[i], pos, true)
      if not a or b > stop then return false end
      pos = b + 1
    end
  end
  return true
end

if rec[16] and rec[16] ~= '' then
  -- A request that names no model is refused, whatever the list (even '*').
  local allowed = false
  if ARGV[7] == '' then
    return {11, kid, ws, proj, env, legacy}
  end
  for line in string.gmatch(rec[16], '[^\n]+') do
    if glob_match(ARGV[7], line) then
      allowed = true
      break
    end
  end
  if not allowed then
    return {11, kid, ws, proj, env, legacy}
  end
end
-- A cost limit means nothing for a model nobody can price: refuse it up front.
if ARGV[8] == '1' and rec[4] and rec[4] ~= '' then
  return {13, kid, ws, proj, env, legacy}
end

local cost_limit = tonumber(rec[4]) or -1
local token_limit = tonumber(rec[5]) or -1
local rpm = tonumber(rec[6]) or -1
local start_ms, end_ms = period_bounds(rec[7], now_ms)
local pid = period_id(rec[8], start_ms)
local request_id = ARGV[3]
local est_tok, est_cost = tonumber(ARGV[4]), tonumber(ARGV[5])
local tpm = tonumber(rec[14]) or -1
local max_parallel = tonumber(rec[15]) or -1
local budgeted = token_limit >= 0 or cost_limit >= 0 or tpm >= 0
-- Usage and reservations matter only to a key with a token or cost limit: a
-- key without one skips reading them (its admission writes the period's
-- request count only).
local tokens, cost, period_current = 0, 0, false
local rsv_tok, rsv_cost, earliest_lease = 0, 0, -1
local _
if budgeted then
  tokens, cost, _, _, _, period_current = period_usage(KEYS[3], pid)
  rsv_tok, rsv_cost, _, earliest_lease = open_reservations(KEYS[1], KEYS[4], KEYS[5], now_ms,
    rec[19], rec[20])
end
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
local in_window = 0
if rpm >= 0 then
  in_window = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(since), '+inf')
end

local function window_frees_in_ms(index)
  -- ms until the request at position `index` (0 = oldest) leaves the window
  local entry = redis.call('ZRANGE', KEYS[2], '(' .. fmt(since), '+inf', 'BYSCORE',
    'LIMIT', index, 1, 'WITHSCORES')
  if entry[2] == nil then return 0 end
  return math.ceil((tonumber(entry[2]) + WINDOW_US - now_us) / 1000)
end

-- Tokens in the token window, and slots held by other requests (an earlier
-- slot of this same request id is replaced, not added); read, not trimmed.
local tpm_used, in_flight = 0, 0
if tpm >= 0 then
  tpm_used = window_tokens(KEYS[1], KEYS[6], now_us)
end
if max_parallel >= 0 then
  in_flight = slots_held(KEYS[7], now_ms)
  local mine = request_id ~= '' and redis.call('ZSCORE', KEYS[7], request_id)
  if mine and tonumber(mine) > now_ms then in_flight = in_flight - 1 end
end

-- ms until the oldest tokens leave the token window (0: it is empty).
local function token_window_reset_ms()
  local oldest = redis.call('ZRANGE', KEYS[6], '(' .. fmt(since), '+inf', 'BYSCORE',
    'LIMIT', 0, 1, 'WITHSCORES')
  if oldest[2] == nil then return 0 end
  return math.ceil((tonumber(oldest[2]) + WINDOW_US - now_us) / 1000)
end

-- When tokens per minute refuses: until enough tokens leave the window for
-- this request to fit; -1 when its estimate alone exceeds the limit. When
-- open reservations hold the rest, until the window is empty (at least 1 s):
-- requests in flight end and settle at a time nobody can predict.
local function tpm_retry_ms()
  local need = 1
  if reserving and est_tok ~= nil then
    if est_tok > tpm then return -1 end
    need = math.max(est_tok, 1)
  end
  local target = tpm - need - rsv_tok  -- the window may hold at most this much
  local left = tpm_used
  local entries = redis.call('ZRANGE', KEYS[6], '(' .. fmt(since), '+inf', 'BYSCORE',
    'WITHSCORES')
  for i = 1, #entries, 2 do
    left = left - token_entry_amount(entries[i])
    if target >= 0 and left <= target then
      return math.ceil((tonumber(entries[i + 1]) + WINDOW_US - now_us) / 1000)
    end
  end
  return math.max(token_window_reset_ms(), 1000)
end

local function denied(code, retry_ms, rpm_remaining, rpm_reset, tpm_reset)
  if tpm >= 0 and tpm_reset == nil then tpm_reset = token_window_reset_ms() end
  return {code, kid, ws, proj, env, legacy, rpm, rpm_remaining, rpm_reset,
    token_limit, remaining(token_limit, tokens + rsv_tok),
    cost_limit, remaining(cost_limit, cost + rsv_cost),
    budget_reset_ms, retry_ms, -1, -1,
    tpm, remaining(tpm, tpm_used + rsv_tok), tpm_reset or -1,
    max_parallel, remaining(max_parallel, in_flight), 0}
end

if exhausted(cost_limit, cost + rsv_cost, est_cost) then
  return denied(8, budget_retry_ms(cost, cost_limit), remaining(rpm, in_window), -1)
end
if exhausted(token_limit, tokens + rsv_tok, est_tok) then
  return denied(7, budget_retry_ms(tokens, token_limit), remaining(rpm, in_window), -1)
end
if exhausted(tpm, tpm_used + rsv_tok, est_tok) then
  local wait = tpm_retry_ms()
  return denied(9, wait, remaining(rpm, in_window), -1, wait)
end
if rpm >= 0 and in_window >= rpm then
  -- The window has room again when the (in_window - rpm + 1)-th oldest leaves.
  local wait = window_frees_in_ms(in_window - rpm)
  return denied(6, wait, 0, wait)
end
if max_parallel >= 0 and in_flight >= max_parallel then
  -- A slot frees when a request in flight ends, which nobody can predict: 1 s,
  -- or sooner when the first slot's lease runs out before that.
  local first = redis.call('ZRANGE', KEYS[7], '(' .. fmt(now_ms), '+inf', 'BYSCORE',
    'LIMIT', 0, 1, 'WITHSCORES')
  local wait = 1000
  if first[2] and tonumber(first[2]) - now_ms < wait then wait = tonumber(first[2]) - now_ms end
  return denied(10, wait, remaining(rpm, in_window), -1)
end

-- Admitted: now (and only now) write. The lifetime request count doubles as
-- the sequence that keeps window members unique within one microsecond.
local seq = (tonumber(rec[21]) or 0) + 1
if rpm >= 0 then
  redis.call('ZADD', KEYS[2], fmt(now_us), fmt(now_us) .. '-' .. fmt(seq))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(since))
  redis.call('PEXPIRE', KEYS[2], 61000)
  redis.call('HSET', KEYS[1], 'lt_req', fmt(seq), 'last_used_at', fmt(now_ms))
else
  redis.call('HSET', KEYS[1], 'lt_req', fmt(seq), 'last_used_at', fmt(now_ms),
    slot_field, ring_bump(rec[22], now_s))
end
open_period(KEYS[3], pid, end_ms, now_ms, period_current)
redis.call('HINCRBY', KEYS[3], 'requests', 1)

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

local tpm_reset = -1
if tpm >= 0 then
  trim_token_window(KEYS[1], KEYS[6], now_us)
  tpm_reset = token_window_reset_ms()
end
local slot_held = 0
if max_parallel >= 0 and request_id ~= '' then
  local lease_ms = tonumber(ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', fmt(now_ms))
  redis.call('ZADD', KEYS[7], fmt(now_ms + lease_ms), request_id)
  redis.call('PEXPIRE', KEYS[7], fmt(lease_ms))
  in_flight, slot_held = in_flight + 1, 1
end

local rpm_remaining, rpm_reset = -1, -1
if rpm >= 0 then
  rpm_remaining = remaining(rpm, in_window + 1)
  rpm_reset = window_frees_in_ms(0)
end
return {0, kid, ws, proj, env, legacy, rpm, rpm_remaining, rpm_reset,
  token_limit, remaining(token_limit, tokens + rsv_tok),
  cost_limit, remaining(cost_limit, cost + rsv_cost),
  budget_reset_ms, -1, reserved_tok, reserved_cost,
  tpm, remaining(tpm, tpm_used + rsv_tok), tpm_reset,
  max_parallel, remaining(max_parallel, in_flight), slot_held}
