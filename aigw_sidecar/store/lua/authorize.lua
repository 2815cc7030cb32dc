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
-- Returns {status, name, value, name, value, ...}, decoded by store/replies.py:
--   status: 'allowed', a deny reason (of the key, the model, or the limit
--     kind that refused), or 'already_settled' (the request id was
--     already settled by a usage report: a caller error, its new usage would
--     be ignored as a retry);
--   key_id, workspace, project, environment, legacy: the key (absent for
--     key_unknown);
--   retry_after_ms (-1: nothing resets), reserved_tokens and reserved_cost
--     (-1: nothing reserved), slot_held (1: a parallel slot is held), and for
--     each limit kind the key has 'limit:<name>' followed by three values:
--     limit, remaining, reset_ms (-1: none); only for a decision that reached
--     the limits.
-- Budgets count usage + open reservations: every request needs usage +
-- reservations below the limit, and one with an estimate also needs usage +
-- reservations + its estimate to fit the limit. The checks run in the order of
-- LIMIT_KINDS; the first kind that refuses is the reason. The previous secret
-- of a rotation is accepted until its 'prev_until' (exclusive).
-- Invariant: a denied request writes nothing: every counter stays untouched.
local now_us = clock_us(ARGV[2])
local now_ms = floor_div(now_us, 1000)
local now_s = floor_div(now_ms, 1000)
local since_us = now_us - WINDOW_US
local ring_slot = ring_field(now_s)
-- The limit kinds' fields first (their locals are declared below), then the key's own.
local rec = redis.call('HMGET', KEYS[1], @KIND_FIELDS@ 'hash', 'enabled', 'expires_at',
  'period', 'epoch', 'kid', 'ws', 'proj', 'env', 'legacy', 'models', 'prev_hash', 'prev_until',
  'rsv_tok', 'rsv_cost', 'lt_req', ring_slot)
local hash, enabled, expires_at, period, epoch, kid, ws, proj, env, legacy, models, prev_hash,
  prev_until, rsv_tok, rsv_cost, lt_req, ring = unpack(rec, @FIXED@)
if not hash then
  return {DENY.KEY_UNKNOWN}
end
if hash ~= ARGV[1] and not (prev_hash == ARGV[1] and (tonumber(prev_until) or 0) > now_ms) then
  return {DENY.KEY_UNKNOWN}
end
-- The reply: the status, the key, and for a decision that reached the limits,
-- the wait, what it holds and (limit_states) the state of every limit kind.
local function answer(status, retry_ms, reserved_tok, reserved_cost, held)
  if retry_ms == nil then
    return {status, 'key_id', kid, 'workspace', ws, 'project', proj or '',
      'environment', env or '', 'legacy', legacy or '0'}
  end
  return {status, 'key_id', kid, 'workspace', ws, 'project', proj or '',
    'environment', env or '', 'legacy', legacy or '0', 'retry_after_ms', retry_ms,
    'reserved_tokens', reserved_tok, 'reserved_cost', reserved_cost, 'slot_held', held}
end
if enabled ~= '1' then
  return answer(DENY.KEY_DISABLED)
end
if expires_at and expires_at ~= '' and tonumber(expires_at) <= now_ms then
  return answer(DENY.KEY_EXPIRED)
end
local request_id = ARGV[3]
if request_id ~= '' and redis.call('ZSCORE', KEYS[8], request_id) then
  return answer(STATUS.ALREADY_SETTLED)
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

if models and models ~= '' then
  -- A request that names no model is refused, whatever the list (even '*').
  local allowed = false
  if ARGV[7] == '' then
    return answer(DENY.MODEL_NOT_ALLOWED)
  end
  for line in string.gmatch(models, '[^\n]+') do
    if glob_match(ARGV[7], line) then
      allowed = true
      break
    end
  end
  if not allowed then
    return answer(DENY.MODEL_NOT_ALLOWED)
  end
end

--@declare
-- A limit on money means nothing for a model nobody can price: refuse it up front.
if ARGV[8] == '1' and @ANY_LIMITED:micro_usd@ then
  return answer(DENY.MODEL_NOT_PRICED)
end
-- Tokens and money need the period's usage and the open reservations.
local budgeted = @ANY_LIMITED:tokens,micro_usd@

local start_ms, end_ms = period_bounds(period, now_ms)
local pid = period_id(epoch, start_ms)
local lease_ms = tonumber(ARGV[6])
local est_tokens, est_micro_usd = tonumber(ARGV[4]), tonumber(ARGV[5])
local period_tokens, period_micro_usd, reserved_tokens, reserved_micro_usd = 0, 0, 0, 0
local earliest_lease, budget_reset_ms = -1, -1
if end_ms >= 0 then budget_reset_ms = end_ms - now_ms end
-- A key without a token or cost limit skips reading usage and reservations
-- (its admission writes the period's request count only).
local period_current = false
local _
if budgeted then
  period_tokens, period_micro_usd, _, _, _, period_current = period_usage(KEYS[3], pid)
  reserved_tokens, reserved_micro_usd, _, earliest_lease = open_reservations(KEYS[1], KEYS[4],
    KEYS[5], now_ms, rsv_tok, rsv_cost)
end
local reserving = budgeted and request_id ~= '' and (est_tokens ~= nil or est_micro_usd ~= nil)
if reserving and redis.call('ZSCORE', KEYS[4], request_id) then
  -- The same request asking again: its earlier reservation is replaced, not added.
  local t, m = lease_amounts(KEYS[5], request_id)
  if t and tonumber(redis.call('ZSCORE', KEYS[4], request_id)) > now_ms then
    reserved_tokens, reserved_micro_usd = reserved_tokens - t, reserved_micro_usd - m
  end
end

-- ms until the entry at position index (0 = oldest) of a rolling window zset
-- leaves the window; 0 when there is none.
local function leaves_window_ms(zset, index)
  local entry = redis.call('ZRANGE', zset, '(' .. fmt(since_us), '+inf', 'BYSCORE',
    'LIMIT', index, 1, 'WITHSCORES')
  if entry[2] == nil then return 0 end
  return math.ceil((tonumber(entry[2]) + WINDOW_US - now_us) / 1000)
end

-- Every kind is read before any is checked: a denial reports them all.
--@each read limited

local admitted, refused = false, nil
-- The reply's tail: 'limit:<kind name>', limit, remaining, reset ms (-1: none),
-- for each kind the key has.
local function limit_states(out)
  local function state(name, limit, left, reset)
    local n = #out
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 'limit:' .. name, limit, left, reset
  end
  --@each report limited
  return out
end
local function denied(name, reason, wait)
  refused = name
  return limit_states(answer(reason, wait, -1, -1, 0))
end
-- The checks, in the order of the table: the first kind that refuses is the reason.
--@each refuse limited

-- Admitted: now (and only now) write. The lifetime request count doubles as
-- the sequence of window members.
admitted = true
local seq = (tonumber(lt_req) or 0) + 1
local rec_sets, slot_held = {}, 0
open_period(KEYS[3], pid, end_ms, now_ms, period_current)
redis.call('HINCRBY', KEYS[3], 'requests', 1)
local reserved_tok, reserved_cost = -1, -1
if budgeted then
  sweep_leases(KEYS[1], KEYS[4], KEYS[5], now_ms)
end
if reserving then
  close_lease(KEYS[1], KEYS[4], KEYS[5], request_id)
  reserved_tok, reserved_cost = est_tokens or 0, est_micro_usd or 0
  redis.call('ZADD', KEYS[4], fmt(now_ms + lease_ms), request_id)
  redis.call('HSET', KEYS[5], request_id, fmt(reserved_tok) .. ' ' .. fmt(reserved_cost))
  redis.call('HINCRBY', KEYS[1], 'rsv_tok', fmt(reserved_tok))
  redis.call('HINCRBY', KEYS[1], 'rsv_cost', fmt(reserved_cost))
  reserved_tokens = reserved_tokens + reserved_tok
  reserved_micro_usd = reserved_micro_usd + reserved_cost
end
--@each admit limited
--@each idle unlimited
redis.call('HSET', KEYS[1], 'lt_req', fmt(seq), 'last_used_at', fmt(now_ms), unpack(rec_sets))

return limit_states(answer(STATUS.ALLOWED, -1, reserved_tok, reserved_cost, slot_held))
