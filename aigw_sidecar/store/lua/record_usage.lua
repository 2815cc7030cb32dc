-- record_usage: count what one admitted request used, once per request id,
-- settling its reservation (charge the actual usage, release the rest).
-- KEYS[1]  key record        aigw:key:{<key id>}     (hash)
-- KEYS[2]  period usage      aigw:usage:{<key id>}   (hash)
-- KEYS[3]  seen request ids  aigw:seen:{<key id>}    (zset, score = ms)
-- KEYS[4]  lease expiries    aigw:lease:{<key id>}   (zset)
-- KEYS[5]  lease amounts     aigw:leasev:{<key id>}  (hash)
-- KEYS[6]  token window      aigw:tpm:{<key id>}     (zset; charged when the key has tokens per minute)
-- KEYS[7]  parallel slots    aigw:slot:{<key id>}    (zset; this request's slot is freed)
-- KEYS[8]  usage history     aigw:hist:{<key id>}    (hash; cost, tokens, requests per UTC day)
-- ARGV[1]  request id
-- ARGV[2]  prompt tokens      ARGV[3] completion tokens   ARGV[4] cost in micro-USD
-- ARGV[5]  now in µs, or '' for Redis TIME
-- ARGV[6]  how long a request id is remembered, in ms
-- ARGV[7]  model ('' when not given); usage is also split per model
-- ARGV[8]  '1' when the model had no price in the pricing table
-- Returns {code, name, value, ...}, decoded by store/replies.py:
--   code: CODE.OK counted, CODE.REPEATED already counted (nothing changed),
--   CODE.NOT_FOUND, CODE.COUNTER_CAP refused: a counter would pass
--   COUNTER_CAP (nothing changed);
--   period_tokens, period_cost; settled: 1 when an open reservation of this
--   request was settled.
-- A counted report also returns workspace, project, expired_reservations
--   (the key's leases swept as expired since the last counted report, by any
--   script), period_start_ms, and alerts: a list of {budget ('cost'|'tokens'),
--   percent, used, limit} or {'expiry', days, 0, expires_at_ms}, the alerts
--   this report crossed.
local MAX_MODELS = 64
-- Every counter stays exact as a Lua number (a double) and far from HINCRBY's
-- int64 overflow, which would fail the script half-way: a report that would
-- take one past this cap is refused before anything is written.
local COUNTER_CAP = 9007199254740991  -- 2^53 - 1
local HISTORY_DAYS = @HISTORY_DAYS@
-- The record's fields this script reads, in one call.
local rec = redis.call('HMGET', KEYS[1], @KIND_FIELDS@ 'kid', 'period', 'epoch', 'lt_pt',
  'lt_ct', 'lt_cost', 'alert_pct', 'alert_exp_days', 'expires_at', 'ws', 'proj')
local kid, period, epoch, lt_pt, lt_ct, lt_cost, alert_pct, alert_exp_days, expires_at, ws,
  proj = unpack(rec, @FIXED@)
--@declare
if not kid then
  return {CODE.NOT_FOUND, 'period_tokens', 0, 'period_cost', 0}
end
local now_us = clock_us(ARGV[5])
local now_ms = floor_div(now_us, 1000)
local start_ms, end_ms = period_bounds(period, now_ms)
local pid = period_id(epoch, start_ms)
local seen_at = redis.call('ZSCORE', KEYS[3], ARGV[1])
if seen_at and tonumber(seen_at) > now_ms - tonumber(ARGV[6]) then
  local tokens, cost = period_usage(KEYS[2], pid)
  return {CODE.REPEATED, 'period_tokens', tokens, 'period_cost', cost}
end

local add_tokens = tonumber(ARGV[2]) + tonumber(ARGV[3])
local add_cost = tonumber(ARGV[4])
local p_tokens, p_cost, _, _, _, current = period_usage(KEYS[2], pid)
do
  local lt_tokens = (tonumber(lt_pt) or 0) + (tonumber(lt_ct) or 0)
  if p_tokens + add_tokens > COUNTER_CAP or p_cost + add_cost > COUNTER_CAP
      or lt_tokens + add_tokens > COUNTER_CAP
      or (tonumber(lt_cost) or 0) + add_cost > COUNTER_CAP then
    return {CODE.COUNTER_CAP, 'period_tokens', p_tokens, 'period_cost', p_cost}
  end
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

open_period(KEYS[2], pid, end_ms, now_ms, current)
local total = add_tokens
local charged_window = false
local tokens = redis.call('HINCRBY', KEYS[2], 'tokens', fmt(total))
local cost = redis.call('HINCRBY', KEYS[2], 'cost', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'pt', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'ct', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'lt_pt', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'lt_ct', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'lt_cost', ARGV[4])

-- Usage history, HISTORY_DAYS days (see the prelude): a report of the key's
-- current day rewrites the running counters; the first report of a later day
-- files the previous one as 'd:<day>', drops the days that left the window
-- since then (whatever the gaps: the hash never holds more than HISTORY_DAYS
-- days) and sets the TTL to HISTORY_DAYS + 1 days; a report dated before the
-- current day (a clock behind the last report's) goes to its own day while it
-- is in the window. A day's counters stay below the lifetime ones, so below
-- COUNTER_CAP.
do
  local day = floor_div(now_ms, DAY_MS)
  local h = redis.call('HMGET', KEYS[8], 'day', 'c', 't', 'r')
  local last = tonumber(h[1])
  if last == day then
    redis.call('HSET', KEYS[8], 'c', fmt(tonumber(h[2]) + add_cost),
      't', fmt(tonumber(h[3]) + add_tokens), 'r', fmt(tonumber(h[4]) + 1))
  elseif not last or last < day then
    if last then
      local gone = {}
      for old = last - HISTORY_DAYS + 1, math.min(last - 1, day - HISTORY_DAYS) do
        gone[#gone + 1] = 'd:' .. fmt(old)
      end
      if #gone > 0 then
        redis.call('HDEL', KEYS[8], unpack(gone))
      end
      if last > day - HISTORY_DAYS then
        redis.call('HSET', KEYS[8], 'd:' .. fmt(last),
          history_value(tonumber(h[2]), tonumber(h[3]), tonumber(h[4])))
      end
    end
    redis.call('HSET', KEYS[8], 'day', fmt(day), 'c', fmt(add_cost), 't', fmt(add_tokens),
      'r', '1')
    redis.call('PEXPIRE', KEYS[8], fmt((HISTORY_DAYS + 1) * DAY_MS))
  elseif day > last - HISTORY_DAYS then
    local field = 'd:' .. fmt(day)
    local c, t, r = history_day(redis.call('HGET', KEYS[8], field))
    redis.call('HSET', KEYS[8], field, history_value(c + add_cost, t + add_tokens, r + 1))
  end
end

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
-- Budget alerts: a crossing is detected here, atomically, so exactly one report
-- (on any replica) sees it. A threshold's marker lives in the usage hash, which
-- each period starts clean, and holds the limit it fired for (a raised limit
-- re-arms it); the expiry warning's marker, in the record, holds the expiry.
local alerts = {}
local function threshold_alerts(budget, used, limit)
  if not limit then return end
  for pct in string.gmatch(alert_pct, '%d+') do
    local marker = 'al:' .. budget .. ':' .. pct
    -- ceil(limit * pct / 100), exact while the threshold stays below 2^53.
    local p = tonumber(pct)
    if used >= floor_div(limit, 100) * p + math.ceil((limit % 100) * p / 100)
        and redis.call('HGET', KEYS[2], marker) ~= fmt(limit) then
      redis.call('HSET', KEYS[2], marker, fmt(limit))
      alerts[#alerts + 1] = {budget, tonumber(pct), used, limit}
    end
  end
end
-- The kinds' settlement: the token window charged (for a key with tokens per
-- minute), thresholds of the period's limits checked (for a key with alerts).
local total_tokens, total_micro_usd = tokens, cost
local with_alerts = alert_pct and alert_pct ~= ''
--@each settle limited
local exp_days = tonumber(alert_exp_days)
expires_at = tonumber(expires_at)
if exp_days and expires_at and now_ms < expires_at
    and now_ms >= expires_at - exp_days * DAY_MS then
  local marker = fmt(expires_at) .. ':' .. fmt(exp_days)
  if redis.call('HGET', KEYS[1], 'al:exp') ~= marker then
    redis.call('HSET', KEYS[1], 'al:exp', marker)
    alerts[#alerts + 1] = {'expiry', exp_days, 0, expires_at}
  end
end
local swept = tonumber(redis.call('HGET', KEYS[1], 'rsv_swept')) or 0
if swept > 0 then
  redis.call('HDEL', KEYS[1], 'rsv_swept')
end
return {CODE.OK, 'period_tokens', tokens, 'period_cost', cost, 'settled', settled,
  'workspace', ws or '', 'project', proj or '', 'expired_reservations', swept,
  'period_start_ms', fmt(start_ms), 'alerts', alerts}
