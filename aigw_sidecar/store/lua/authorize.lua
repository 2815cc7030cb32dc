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
--   status: STATUS.ALLOWED, a deny reason (DENY.*, or the deny_reason of the
--     limit kind that refused), or STATUS.ALREADY_SETTLED (the request id was
--     already settled by a usage report: a caller error, its new usage would
--     be ignored as a retry);
--   key_id, workspace, project, environment, legacy: the key (absent for
--     DENY.KEY_UNKNOWN);
--   retry_after_ms (-1: nothing resets), reserved_tokens and reserved_cost
--     (-1: nothing reserved), slot_held (1: a parallel slot is held), and for
--     each limit kind the key has, its name -> {limit, remaining, reset_ms}
--     (reset -1: none): only for a decision that reached the limits.
-- Budgets count usage + open reservations: every request needs usage +
-- reservations below the limit, and one with an estimate also needs usage +
-- reservations + its estimate to fit the limit. The checks run in the order of
-- LIMIT_KINDS; the first kind that refuses is the reason. The previous secret
-- of a rotation is accepted until its 'prev_until' (exclusive).
-- Invariant: a denied request writes nothing: every counter stays untouched.
local now_us = clock_us(ARGV[2])
local now_ms = floor_div(now_us, 1000)
local now_s = floor_div(now_ms, 1000)
local rec = read_record(KEYS[1], limit_fields({'hash', 'enabled', 'expires_at', 'period',
  'epoch', 'kid', 'ws', 'proj', 'env', 'legacy', 'models', 'prev_hash', 'prev_until',
  'rsv_tok', 'rsv_cost', 'lt_req', ring_field(now_s)}))
if not rec.hash then
  return {DENY.KEY_UNKNOWN}
end
if rec.hash ~= ARGV[1] and not (rec.prev_hash == ARGV[1] and (tonumber(rec.prev_until) or 0) > now_ms) then
  return {DENY.KEY_UNKNOWN}
end
local identity = {'key_id', rec.kid, 'workspace', rec.ws, 'project', rec.proj or '',
  'environment', rec.env or '', 'legacy', rec.legacy or '0'}
local function answer(status)
  local out = {status}
  for _, v in ipairs(identity) do out[#out + 1] = v end
  return out
end
if rec.enabled ~= '1' then
  return answer(DENY.KEY_DISABLED)
end
if rec.expires_at and rec.expires_at ~= '' and tonumber(rec.expires_at) <= now_ms then
  return answer(DENY.KEY_EXPIRED)
end
if ARGV[3] ~= '' and redis.call('ZSCORE', KEYS[8], ARGV[3]) then
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

if rec.models and rec.models ~= '' then
  -- A request that names no model is refused, whatever the list (even '*').
  local allowed = false
  if ARGV[7] == '' then
    return answer(DENY.MODEL_NOT_ALLOWED)
  end
  for line in string.gmatch(rec.models, '[^\n]+') do
    if glob_match(ARGV[7], line) then
      allowed = true
      break
    end
  end
  if not allowed then
    return answer(DENY.MODEL_NOT_ALLOWED)
  end
end

-- The key's limits, in check order; a kind the key has no limit of is skipped.
local limited, budgeted = {}, false
for _, kind in ipairs(LIMIT_KINDS) do
  local limit = tonumber(rec[kind.field])
  if limit then
    limited[#limited + 1] = {kind = kind, limit = limit}
    -- Tokens and money need the period's usage and the open reservations.
    if kind.unit ~= 'requests' then budgeted = true end
  end
  -- A cost limit means nothing for a model nobody can price: refuse it up front.
  if limit and kind.unit == 'micro_usd' and ARGV[8] == '1' then
    return answer(DENY.MODEL_NOT_PRICED)
  end
end

local start_ms, end_ms = period_bounds(rec.period, now_ms)
local pid = period_id(rec.epoch, start_ms)
local c = {
  K = KEYS, rec = rec, now_us = now_us, now_ms = now_ms, now_s = now_s,
  since_us = now_us - WINDOW_US, request_id = ARGV[3], lease_ms = tonumber(ARGV[6]),
  est = {tokens = tonumber(ARGV[4]), micro_usd = tonumber(ARGV[5])},
  period = {tokens = 0, micro_usd = 0}, reserved = {tokens = 0, micro_usd = 0},
  earliest_lease = -1, budget_reset_ms = -1, rec_sets = {}, slot_held = 0,
  seq = (tonumber(rec.lt_req) or 0) + 1,
}
if end_ms >= 0 then c.budget_reset_ms = end_ms - now_ms end
-- A key without a token or cost limit skips reading usage and reservations
-- (its admission writes the period's request count only).
local period_current = false
local _
if budgeted then
  c.period.tokens, c.period.micro_usd, _, _, _, period_current = period_usage(KEYS[3], pid)
  c.reserved.tokens, c.reserved.micro_usd, _, c.earliest_lease = open_reservations(KEYS[1],
    KEYS[4], KEYS[5], now_ms, rec.rsv_tok, rec.rsv_cost)
end
c.reserving = budgeted and c.request_id ~= '' and (c.est.tokens ~= nil or c.est.micro_usd ~= nil)
if c.reserving and redis.call('ZSCORE', KEYS[4], c.request_id) then
  -- The same request asking again: its earlier reservation is replaced, not added.
  local t, m = lease_amounts(KEYS[5], c.request_id)
  if t and tonumber(redis.call('ZSCORE', KEYS[4], c.request_id)) > now_ms then
    c.reserved.tokens, c.reserved.micro_usd = c.reserved.tokens - t, c.reserved.micro_usd - m
  end
end

-- Every kind is read before any is checked: a denial reports them all.
for _, s in ipairs(limited) do
  WINDOWS[s.kind.window].read(c, s.kind, s)
end

local function limit_states(out, admitted)
  for _, s in ipairs(limited) do
    local left, reset = WINDOWS[s.kind.window].report(c, s.kind, s, admitted)
    out[#out + 1] = s.kind.name
    out[#out + 1] = {s.limit, left, reset}
  end
  return out
end

for _, s in ipairs(limited) do
  local wait = WINDOWS[s.kind.window].refuse(c, s.kind, s)
  if wait then
    local out = answer(s.kind.reason)
    for _, v in ipairs({'retry_after_ms', wait, 'reserved_tokens', -1, 'reserved_cost', -1,
      'slot_held', 0}) do out[#out + 1] = v end
    return limit_states(out, false)
  end
end

-- Admitted: now (and only now) write. The lifetime request count doubles as
-- the sequence of window members.
open_period(KEYS[3], pid, end_ms, now_ms, period_current)
redis.call('HINCRBY', KEYS[3], 'requests', 1)
local reserved_tok, reserved_cost = -1, -1
if budgeted then
  sweep_leases(KEYS[1], KEYS[4], KEYS[5], now_ms)
end
if c.reserving then
  close_lease(KEYS[1], KEYS[4], KEYS[5], c.request_id)
  reserved_tok, reserved_cost = c.est.tokens or 0, c.est.micro_usd or 0
  redis.call('ZADD', KEYS[4], fmt(now_ms + c.lease_ms), c.request_id)
  redis.call('HSET', KEYS[5], c.request_id, fmt(reserved_tok) .. ' ' .. fmt(reserved_cost))
  redis.call('HINCRBY', KEYS[1], 'rsv_tok', fmt(reserved_tok))
  redis.call('HINCRBY', KEYS[1], 'rsv_cost', fmt(reserved_cost))
  c.reserved.tokens = c.reserved.tokens + reserved_tok
  c.reserved.micro_usd = c.reserved.micro_usd + reserved_cost
end
local has = {}
for _, s in ipairs(limited) do
  has[s.kind.name] = true
  WINDOWS[s.kind.window].admit(c, s.kind, s)
end
for _, kind in ipairs(LIMIT_KINDS) do
  if not has[kind.name] then WINDOWS[kind.window].idle(c, kind) end
end
redis.call('HSET', KEYS[1], 'lt_req', fmt(c.seq), 'last_used_at', fmt(now_ms), unpack(c.rec_sets))

local out = answer(STATUS.ALLOWED)
for _, v in ipairs({'retry_after_ms', -1, 'reserved_tokens', reserved_tok,
  'reserved_cost', reserved_cost, 'slot_held', c.slot_held}) do out[#out + 1] = v end
return limit_states(out, true)
