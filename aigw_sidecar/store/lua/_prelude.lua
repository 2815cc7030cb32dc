-- Shared prelude, prepended to every script of this folder when it is loaded.
-- Lua numbers are doubles: every integer handled here stays below 2^53
-- (micro-seconds since the epoch, micro-USD, token counts), and integers are
-- formatted with fmt() before they reach Redis, never with tostring().
local WINDOW_US = 60000000

local function fmt(n)
  return string.format('%d', n)
end

-- The one clock: Redis TIME, unless the caller passes an explicit time (tests).
local function clock_us(override)
  if override and override ~= '' then
    return tonumber(override)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function floor_div(a, b)
  return math.floor(a / b)
end

-- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor_div(y, 400)
  local yoe = y - era * 400
  local mp = (m > 2) and (m - 3) or (m + 9)
  local doy = floor_div(153 * mp + 2, 5) + d - 1
  local doe = yoe * 365 + floor_div(yoe, 4) - floor_div(yoe, 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = floor_div(z, 146097)
  local doe = z - era * 146097
  local yoe = floor_div(doe - floor_div(doe, 1460) + floor_div(doe, 36524) - floor_div(doe, 146096), 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + floor_div(yoe, 4) - floor_div(yoe, 100))
  local mp = floor_div(5 * doy + 2, 153)
  local d = doy - floor_div(153 * mp + 2, 5) + 1
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local DAY_MS = 86400000

-- Requests of the last minute of a key WITHOUT a requests-per-minute limit
-- are counted per second in a ring of 60 record fields ('rq<second mod 60>'
-- = '<second> <count>'), a few bytes per key whatever the traffic; a key with
-- the limit keeps the exact rolling window (a zset of admitted requests).
local function ring_field(now_s)
  return 'rq' .. fmt(now_s % 60)
end

local function ring_bump(value, now_s)
  local sec, count = string.match(value or '', '^(%d+) (%d+)$')
  if tonumber(sec) == now_s then
    return fmt(now_s) .. ' ' .. fmt(tonumber(count) + 1)
  end
  return fmt(now_s) .. ' 1'
end

-- Requests counted by the ring in the last 60 whole seconds (to the second).
local function ring_total(fields, now_s)
  local total = 0
  for slot = 0, 59 do
    local sec, count = string.match(fields['rq' .. slot] or '', '^(%d+) (%d+)$')
    if sec and tonumber(sec) > now_s - 60 then
      total = total + tonumber(count)
    end
  end
  return total
end

-- Start (inclusive) and end (exclusive) in ms of the UTC calendar period
-- holding now_ms; end is -1 for 'never'.
local function period_bounds(period, now_ms)
  if period == nil or period == false or period == '' or period == 'never' then
    return 0, -1
  end
  local days = floor_div(now_ms, DAY_MS)
  if period == 'daily' then
    return days * DAY_MS, (days + 1) * DAY_MS
  elseif period == 'weekly' then
    -- 1970-01-01 was a Thursday; weeks start on Monday.
    local monday = days - ((days + 3) % 7)
    return monday * DAY_MS, (monday + 7) * DAY_MS
  end
  local y, m = civil_from_days(days)
  if period == 'monthly' then
    local ny, nm = y, m + 1
    if nm == 13 then ny, nm = y + 1, 1 end
    return days_from_civil(y, m, 1) * DAY_MS, days_from_civil(ny, nm, 1) * DAY_MS
  end
  return days_from_civil(y, 1, 1) * DAY_MS, days_from_civil(y + 1, 1, 1) * DAY_MS
end

-- The counter period id: the reset-period epoch (bumped when the admin
-- changes the reset period, which starts a clean period) and the start.
local function period_id(epoch, start_ms)
  return (epoch or '0') .. ':' .. fmt(start_ms)
end

-- Current-period usage {tokens, cost, requests, prompt, completion, current};
-- zeros when the stored counters belong to an earlier period (lazy reset: no
-- cron); current tells whether the hash already belongs to period pid.
local function period_usage(usage_key, pid)
  local u = redis.call('HMGET', usage_key, 'pid', 'tokens', 'cost', 'requests', 'pt', 'ct')
  if u[1] ~= pid then
    return 0, 0, 0, 0, 0, false
  end
  return tonumber(u[2]) or 0, tonumber(u[3]) or 0, tonumber(u[4]) or 0,
         tonumber(u[5]) or 0, tonumber(u[6]) or 0, true
end

-- Make the usage hash belong to period pid, starting clean if it did not,
-- and give it a TTL a day past the period's end ('never' periods keep it
-- until the key is deleted). current: the caller already knows it does.
local function open_period(usage_key, pid, end_ms, now_ms, current)
  if not current and redis.call('HGET', usage_key, 'pid') ~= pid then
    redis.call('DEL', usage_key)
    redis.call('HSET', usage_key, 'pid', pid)
    if end_ms >= 0 then
      redis.call('PEXPIRE', usage_key, fmt(end_ms - now_ms + DAY_MS))
    end
  end
end

-- Budget reservations are leases: KEYS lease zset (request id -> expiry ms)
-- and lease hash (request id -> "tokens cost"); their open totals live in the
-- key record as rsv_tok and rsv_cost. An expired lease no longer counts,
-- whether or not it has been swept yet.
local function lease_amounts(lease_hash, request_id)
  local v = redis.call('HGET', lease_hash, request_id)
  if not v then return nil, nil end
  local t, c = string.match(v, '^(%d+) (%d+)$')
  return tonumber(t), tonumber(c)
end

-- Open reservation totals {tokens, cost, count, earliest expiry ms or -1}
-- as of now_ms, without writing anything. rsv_tok and rsv_cost: the record's
-- fields when the caller has read them already (nil: read them here).
local function open_reservations(record_key, lease_zset, lease_hash, now_ms, rsv_tok, rsv_cost)
  if rsv_tok == nil and rsv_cost == nil then
    local r = redis.call('HMGET', record_key, 'rsv_tok', 'rsv_cost')
    rsv_tok, rsv_cost = r[1], r[2]
  end
  local tokens, cost = tonumber(rsv_tok) or 0, tonumber(rsv_cost) or 0
  local count = redis.call('ZCOUNT', lease_zset, '(' .. fmt(now_ms), '+inf')
  if tokens == 0 and cost == 0 and count == 0 then
    return 0, 0, 0, -1
  end
  local expired = redis.call('ZRANGE', lease_zset, '-inf', fmt(now_ms), 'BYSCORE')
  for _, id in ipairs(expired) do
    local t, c = lease_amounts(lease_hash, id)
    if t then
      tokens, cost = tokens - t, cost - c
    end
  end
  local first = redis.call('ZRANGE', lease_zset, '(' .. fmt(now_ms), '+inf', 'BYSCORE',
    'LIMIT', 0, 1, 'WITHSCORES')
  local earliest = -1
  if first[2] then earliest = tonumber(first[2]) end
  return tokens, cost, count, earliest
end

-- Close one lease (settled, released or expired): its amounts leave the totals.
local function close_lease(record_key, lease_zset, lease_hash, request_id)
  local t, c = lease_amounts(lease_hash, request_id)
  redis.call('ZREM', lease_zset, request_id)
  if not t then return false end
  redis.call('HDEL', lease_hash, request_id)
  redis.call('HINCRBY', record_key, 'rsv_tok', fmt(-t))
  redis.call('HINCRBY', record_key, 'rsv_cost', fmt(-c))
  return true
end

-- Sweep every lease that expired by now_ms.
local function sweep_leases(record_key, lease_zset, lease_hash, now_ms)
  local expired = redis.call('ZRANGE', lease_zset, '-inf', fmt(now_ms), 'BYSCORE')
  local closed = 0
  for _, id in ipairs(expired) do
    if close_lease(record_key, lease_zset, lease_hash, id) then closed = closed + 1 end
  end
  -- Counted for metrics; record_usage.lua reports and resets it.
  if closed > 0 then
    redis.call('HINCRBY', record_key, 'rsv_swept', closed)
  end
end

-- Tokens per minute: a token window zset (score µs, member
-- '<µs>-<seq>:<tokens>') whose running total is the record's 'tpm_tok', so a
-- decision never sums the whole window. The window is (now - 60 s, now], like
-- the request window. A token window that is gone (its TTL passed, 61 s after
-- its last charge) held nothing still in the window, whatever 'tpm_tok' says.
local function token_entry_amount(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end

-- Tokens charged in the window as of now_us, without writing anything.
local function window_tokens(record_key, token_window, now_us)
  if redis.call('EXISTS', token_window) == 0 then return 0 end
  local total = tonumber(redis.call('HGET', record_key, 'tpm_tok')) or 0
  local gone = redis.call('ZRANGE', token_window, '-inf', fmt(now_us - WINDOW_US), 'BYSCORE')
  for _, member in ipairs(gone) do
    total = total - token_entry_amount(member)
  end
  return total
end

-- Drop the entries that left the window, keeping the total in step with them.
local function trim_token_window(record_key, token_window, now_us)
  if redis.call('EXISTS', token_window) == 0 then
    redis.call('HDEL', record_key, 'tpm_tok')
    return
  end
  local since = fmt(now_us - WINDOW_US)
  local gone = redis.call('ZRANGE', token_window, '-inf', since, 'BYSCORE')
  if #gone == 0 then return end
  local freed = 0
  for _, member in ipairs(gone) do
    freed = freed + token_entry_amount(member)
  end
  redis.call('ZREMRANGEBYSCORE', token_window, '-inf', since)
  redis.call('HINCRBY', record_key, 'tpm_tok', fmt(-freed))
end

-- Charge tokens to the window at now_us (they leave it at now_us + 60 s).
local function charge_token_window(record_key, token_window, now_us, tokens)
  trim_token_window(record_key, token_window, now_us)
  if tokens <= 0 then return end
  local seq = redis.call('HINCRBY', record_key, 'wseq', 1)
  redis.call('ZADD', token_window, fmt(now_us), fmt(now_us) .. '-' .. fmt(seq) .. ':' .. fmt(tokens))
  redis.call('HINCRBY', record_key, 'tpm_tok', fmt(tokens))
  redis.call('PEXPIRE', token_window, 61000)
end

-- Parallel-request slots: a zset, request id -> lease expiry ms. An expired
-- slot no longer counts, swept or not, so a crashed proxy never locks a key out.
local function slots_held(slots, now_ms)
  return redis.call('ZCOUNT', slots, '(' .. fmt(now_ms), '+inf')
end

-- Free the slot of one request; true when it was still held (not expired).
local function free_slot(slots, request_id, now_ms)
  local lease_end = redis.call('ZSCORE', slots, request_id)
  if not lease_end then return false end
  redis.call('ZREM', slots, request_id)
  return tonumber(lease_end) > now_ms
end


-- What is left of a limit once `used` is counted (-1: no limit).
local function remaining(limit, used)
  if limit < 0 then return -1 end
  if used >= limit then return 0 end
  return limit - used
end

-- A fixed window's counter: '<window index> <count>' in one record field (an
-- older index reads as zero: no cron). The count, and ms until the window ends.
local function fixed_window(value, now_ms, window_s)
  local index = floor_div(now_ms, window_s * 1000)
  local at, count = string.match(value or '', '^(%d+) (%d+)$')
  if tonumber(at) ~= index then count = 0 end
  return tonumber(count), (index + 1) * window_s * 1000 - now_ms
end

local function fixed_value(now_ms, window_s, count)
  return fmt(floor_div(now_ms, window_s * 1000)) .. ' ' .. fmt(count)
end

-- Usage history, one hash per key: 'day', 'c', 't', 'r' are the running cost,
-- tokens and requests of the last day the key had a report (day = days since
-- the epoch, UTC), written first so they stay at the head of the hash (a
-- listpack, searched from its head: a report costs the same whatever the
-- history's length); each earlier day is one field 'd:<day>' =
-- '<cost> <tokens> <requests>'. A missing day reads as zeros.
local function history_day(value)
  local c, t, r = string.match(value or '', '^(%d+) (%d+) (%d+)$')
  return tonumber(c) or 0, tonumber(t) or 0, tonumber(r) or 0
end

local function history_value(c, t, r)
  return fmt(c) .. ' ' .. fmt(t) .. ' ' .. fmt(r)
end
