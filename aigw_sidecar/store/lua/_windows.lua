-- Limit windows: one implementation per LimitKind.window of
-- aigw_sidecar/limits/kinds.py, prepended (after the prelude) to the scripts
-- that check or show limits (authorize, read_key). Those scripts never name a
-- limit kind: they loop over LIMIT_KINDS, generated from the Python table, and
-- call the kind's window. A window has:
--   read(c, kind, s)      s.used: what the limit compares now (s.limit is set)
--   refuse(c, kind, s)    nil when the request fits, else the wait in ms before
--                         it may (-1: waiting will not help)
--   admit(c, kind, s)     the writes of an admitted request, for a key with the limit
--   idle(c, kind)         the writes of an admitted request, for a key without it
--   report(c, kind, s, admitted)   remaining, reset in ms (-1: no reset)
--   overview(c, kind)     what the kind counts now, whether or not the key has it
-- c is the request's context: now_us, now_ms, now_s, since_us (now - 60 s),
-- K (KEYS), rec (the record's fields by name), request_id, reserving, est,
-- period and reserved (by unit: 'tokens', 'micro_usd'), earliest_lease,
-- budget_reset_ms, seq (this request's sequence number), rec_sets (record
-- field/value pairs written once at the end), slot_held.
-- Invariant: read and refuse write nothing, so a denied request changes no counter.
local WINDOWS = {}

local function remaining(limit, used)
  if limit < 0 then return -1 end
  if used >= limit then return 0 end
  return limit - used
end

-- A used-up budget refuses every request; with an estimate the request must
-- also fit whole. (A zero estimate admitted at a used-up budget would overshoot
-- it by whatever the request then uses.)
local function exhausted(c, kind, s)
  if s.used >= s.limit then return true end
  local est = c.est[kind.unit]
  return c.reserving and est ~= nil and s.used + est > s.limit
end

-- ms until the entry at position index (0 = oldest) of a rolling window zset
-- leaves the window; 0 when there is none.
local function leaves_window_ms(c, zset, index)
  local entry = redis.call('ZRANGE', zset, '(' .. fmt(c.since_us), '+inf', 'BYSCORE',
    'LIMIT', index, 1, 'WITHSCORES')
  if entry[2] == nil then return 0 end
  return math.ceil((tonumber(entry[2]) + WINDOW_US - c.now_us) / 1000)
end

-- The key's reset period: reported usage plus open reservations (KEYS[3],
-- the usage hash; reservations are the script's, shared by every kind).
WINDOWS.period = {
  read = function(c, kind, s)
    s.used = c.period[kind.unit] + c.reserved[kind.unit]
  end,
  refuse = function(c, kind, s)
    if not exhausted(c, kind, s) then return nil end
    -- The next reset, or sooner if open reservations (which may settle below
    -- their estimate) expire before it.
    local used_alone = c.period[kind.unit]
    if used_alone < s.limit and c.earliest_lease >= 0 then
      local wait = c.earliest_lease - c.now_ms
      if c.budget_reset_ms < 0 or wait < c.budget_reset_ms then return wait end
    end
    return c.budget_reset_ms
  end,
  admit = function(c, kind, s) end,
  idle = function(c, kind) end,
  report = function(c, kind, s, admitted)
    return remaining(s.limit, c.period[kind.unit] + c.reserved[kind.unit]), c.budget_reset_ms
  end,
  overview = function(c, kind)
    return c.period[kind.unit]
  end,
}

-- Requests admitted in the rolling window (KEYS[2], a zset scored in µs). A key
-- without the limit counts them per second in the record's ring instead.
WINDOWS.rolling_requests = {
  read = function(c, kind, s)
    s.used = redis.call('ZCOUNT', c.K[2], '(' .. fmt(c.since_us), '+inf')
  end,
  refuse = function(c, kind, s)
    if s.used < s.limit then return nil end
    -- Room again when the (used - limit + 1)-th oldest leaves the window.
    s.reset = leaves_window_ms(c, c.K[2], s.used - s.limit)
    return s.reset
  end,
  admit = function(c, kind, s)
    -- The sequence keeps members unique within one microsecond.
    redis.call('ZADD', c.K[2], fmt(c.now_us), fmt(c.now_us) .. '-' .. fmt(c.seq))
    redis.call('ZREMRANGEBYSCORE', c.K[2], '-inf', fmt(c.since_us))
    redis.call('PEXPIRE', c.K[2], 61000)
    s.used = s.used + 1
  end,
  idle = function(c, kind)
    local slot = ring_field(c.now_s)
    c.rec_sets[#c.rec_sets + 1] = slot
    c.rec_sets[#c.rec_sets + 1] = ring_bump(c.rec[slot], c.now_s)
  end,
  report = function(c, kind, s, admitted)
    if admitted then return remaining(s.limit, s.used), leaves_window_ms(c, c.K[2], 0) end
    if s.reset then return 0, s.reset end
    return remaining(s.limit, s.used), -1
  end,
  overview = function(c, kind)
    -- Both sources: a limit added or removed in the last minute hides nothing.
    return redis.call('ZCOUNT', c.K[2], '(' .. fmt(c.since_us), '+inf')
      + ring_total(c.rec, c.now_s)
  end,
}

-- Tokens reported in the rolling window (KEYS[6]) plus open reservations.
local function token_window_reset_ms(c)
  return leaves_window_ms(c, c.K[6], 0)
end

WINDOWS.rolling_tokens = {
  read = function(c, kind, s)
    s.window_used = window_tokens(c.K[1], c.K[6], c.now_us)
    s.used = s.window_used + c.reserved[kind.unit]
  end,
  refuse = function(c, kind, s)
    if not exhausted(c, kind, s) then return nil end
    -- Until enough tokens leave the window for this request to fit; -1 when its
    -- estimate alone exceeds the limit. When open reservations hold the rest,
    -- until the window is empty (at least 1 s): requests in flight end and
    -- settle at a time nobody can predict.
    local need, est = 1, c.est[kind.unit]
    if c.reserving and est ~= nil then
      if est > s.limit then
        s.reset = -1
        return -1
      end
      need = math.max(est, 1)
    end
    local target = s.limit - need - c.reserved[kind.unit]
    local left = s.window_used
    local entries = redis.call('ZRANGE', c.K[6], '(' .. fmt(c.since_us), '+inf', 'BYSCORE',
      'WITHSCORES')
    for i = 1, #entries, 2 do
      left = left - token_entry_amount(entries[i])
      if target >= 0 and left <= target then
        s.reset = math.ceil((tonumber(entries[i + 1]) + WINDOW_US - c.now_us) / 1000)
        return s.reset
      end
    end
    s.reset = math.max(token_window_reset_ms(c), 1000)
    return s.reset
  end,
  admit = function(c, kind, s)
    trim_token_window(c.K[1], c.K[6], c.now_us)
  end,
  idle = function(c, kind) end,
  report = function(c, kind, s, admitted)
    local left = remaining(s.limit, s.window_used + c.reserved[kind.unit])
    if s.reset then return left, s.reset end
    return left, token_window_reset_ms(c)
  end,
  overview = function(c, kind)
    return window_tokens(c.K[1], c.K[6], c.now_us) + c.reserved[kind.unit]
  end,
}

-- Requests in flight: slots (KEYS[7], request id -> lease expiry ms) held until
-- settled, released or expired. An earlier slot of this same request id is
-- replaced, not added.
WINDOWS.in_flight = {
  read = function(c, kind, s)
    s.used = slots_held(c.K[7], c.now_ms)
    local mine = c.request_id ~= '' and redis.call('ZSCORE', c.K[7], c.request_id)
    if mine and tonumber(mine) > c.now_ms then s.used = s.used - 1 end
  end,
  refuse = function(c, kind, s)
    if s.used < s.limit then return nil end
    -- A slot frees when a request in flight ends, which nobody can predict: 1 s,
    -- or sooner when the first slot's lease runs out before that.
    local first = redis.call('ZRANGE', c.K[7], '(' .. fmt(c.now_ms), '+inf', 'BYSCORE',
      'LIMIT', 0, 1, 'WITHSCORES')
    local wait = 1000
    if first[2] and tonumber(first[2]) - c.now_ms < wait then
      wait = tonumber(first[2]) - c.now_ms
    end
    return wait
  end,
  admit = function(c, kind, s)
    if c.request_id == '' then return end
    redis.call('ZREMRANGEBYSCORE', c.K[7], '-inf', fmt(c.now_ms))
    redis.call('ZADD', c.K[7], fmt(c.now_ms + c.lease_ms), c.request_id)
    redis.call('PEXPIRE', c.K[7], fmt(c.lease_ms))
    s.used, c.slot_held = s.used + 1, 1
  end,
  idle = function(c, kind) end,
  -- Slots never reset on a schedule: no reset time.
  report = function(c, kind, s, admitted)
    return remaining(s.limit, s.used), -1
  end,
  overview = function(c, kind)
    return slots_held(c.K[7], c.now_ms)
  end,
}

-- Requests admitted in the current fixed window of window_s seconds aligned to
-- the epoch (86400: the UTC day), counted in the record field 'n:<field>' as
-- '<window index> <count>': an older index reads as zero (no cron). Counted
-- whether or not the key has the limit, so a limit set mid-window counts the
-- window's earlier requests too.
local function fixed_window(c, kind)
  local index = floor_div(c.now_s, kind.window_s)
  local at, count = string.match(c.rec['n:' .. kind.field] or '', '^(%d+) (%d+)$')
  if tonumber(at) ~= index then count = 0 end
  return index, tonumber(count), (index + 1) * kind.window_s * 1000 - c.now_ms
end

local function count_fixed(c, kind)
  local index, count = fixed_window(c, kind)
  c.rec_sets[#c.rec_sets + 1] = 'n:' .. kind.field
  c.rec_sets[#c.rec_sets + 1] = fmt(index) .. ' ' .. fmt(count + 1)
end

WINDOWS.fixed_requests = {
  fields = {'n:'},
  read = function(c, kind, s)
    local _
    _, s.used, s.reset = fixed_window(c, kind)
  end,
  refuse = function(c, kind, s)
    if s.used < s.limit then return nil end
    return s.reset
  end,
  admit = function(c, kind, s)
    count_fixed(c, kind)
    s.used = s.used + 1
  end,
  idle = count_fixed,
  report = function(c, kind, s, admitted)
    return remaining(s.limit, s.used), s.reset
  end,
  overview = function(c, kind)
    local _, count = fixed_window(c, kind)
    return count
  end,
}

-- The record fields a script reads to check or show every kind.
local function limit_fields(fields)
  for _, kind in ipairs(LIMIT_KINDS) do
    fields[#fields + 1] = kind.field
    for _, extra in ipairs(WINDOWS[kind.window].fields or {}) do
      fields[#fields + 1] = extra .. kind.field
    end
  end
  return fields
end

-- The record's fields by name (HMGET answers false for a missing field).
local function read_record(key, fields)
  local values = redis.call('HMGET', key, unpack(fields))
  local rec = {}
  for i, name in ipairs(fields) do rec[name] = values[i] end
  return rec
end
