-- Limit windows: one implementation per LimitKind.window of
-- aigw_sidecar/limits/kinds.py, as Lua snippets that store/scripts.py expands
-- into the scripts once per limit kind, in the table's order, when it loads
-- them (so a script runs straight-line code: no table of kinds, no dispatch and
-- no closures are built on each call). A snippet starts with '--@ <window>.<part>';
-- in it $name, $field, $reason, $unit, $budget, $window_s and $aux (its extra
-- record field, for a window that keeps one) are the kind's,
-- and lim_$name (its limit, nil for none), used_$name, reset_$name, win_$name
-- and aux_$name (its extra record field) are the kind's own locals.
-- Parts, and where a script expands them ('--@each <part>'):
--   read     authorize, for a key with the limit: used_$name, what the limit compares
--   refuse   authorize: return denied(reason, wait ms; -1: waiting will not help)
--            when the request does not fit
--   admit    authorize, admitted, with the limit: the kind's writes
--   idle     authorize, admitted, without the limit (counts kept regardless)
--   report   authorize's reply: state(name, limit, remaining, reset ms (-1: none))
--   overview read_key: what the kind counts now, with or without the limit
--   settle   record_usage, for a key with the limit: what a report changes
--   seeded   update_key: a kind whose window is seeded when the limit is added
-- The scripts' locals the snippets use: now_us, now_ms, now_s, since_us
-- (now - 60 s), request_id, lease_ms, reserving, est_<unit>, period_<unit>,
-- reserved_<unit> (units: tokens, micro_usd), earliest_lease, budget_reset_ms,
-- seq, rec_sets, slot_held, admitted, refused (the name of the refusing kind).
-- record_usage's (settle): add_tokens (the report's), total_<unit> (the
-- period's, the report counted), with_alerts, threshold_alerts, charged_window.
-- Invariant: read and refuse write nothing, so a denied request changes no counter.

--@ period.read
used_$name = period_$unit + reserved_$unit
--@ period.refuse
if used_$name >= lim_$name
    or (reserving and est_$unit ~= nil and used_$name + est_$unit > lim_$name) then
  -- The next reset, or sooner if open reservations (which may settle below
  -- their estimate) expire before it.
  local wait = budget_reset_ms
  if period_$unit < lim_$name and earliest_lease >= 0
      and (budget_reset_ms < 0 or earliest_lease - now_ms < budget_reset_ms) then
    wait = earliest_lease - now_ms
  end
  return denied('$name', '$reason', wait)
end
--@ period.report
state('$name', lim_$name, remaining(lim_$name, period_$unit + reserved_$unit), budget_reset_ms)
--@ period.overview
used[#used + 1] = '$name'
used[#used + 1] = period_$unit
--@ period.settle
if with_alerts then threshold_alerts('$budget', total_$unit, lim_$name) end

--@ rolling_requests.read
-- Requests admitted in the rolling window (KEYS[2], a zset scored in µs).
used_$name = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(since_us), '+inf')
--@ rolling_requests.refuse
if used_$name >= lim_$name then
  -- Room again when the (used - limit + 1)-th oldest leaves the window.
  reset_$name = leaves_window_ms(KEYS[2], used_$name - lim_$name)
  return denied('$name', '$reason', reset_$name)
end
--@ rolling_requests.admit
-- The sequence keeps members unique within one microsecond.
redis.call('ZADD', KEYS[2], fmt(now_us), fmt(now_us) .. '-' .. fmt(seq))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(since_us))
redis.call('PEXPIRE', KEYS[2], 61000)
used_$name = used_$name + 1
--@ rolling_requests.idle
-- Without the limit: counted per second in the record's ring instead.
rec_sets[#rec_sets + 1] = ring_slot
rec_sets[#rec_sets + 1] = ring_bump(ring, now_s)
--@ rolling_requests.report
if admitted then
  state('$name', lim_$name, remaining(lim_$name, used_$name), leaves_window_ms(KEYS[2], 0))
elseif refused == '$name' then
  state('$name', lim_$name, 0, reset_$name)
else
  state('$name', lim_$name, remaining(lim_$name, used_$name), -1)
end
--@ rolling_requests.overview
-- Both sources: a limit added or removed in the last minute hides nothing.
used[#used + 1] = '$name'
used[#used + 1] = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(since_us), '+inf')
  + ring_total(fields, now_s)
--@ rolling_requests.seeded
seeded['$field'] = true

--@ rolling_tokens.read
-- Tokens reported in the rolling window (KEYS[6]) plus open reservations.
win_$name = window_tokens(KEYS[1], KEYS[6], now_us)
used_$name = win_$name + reserved_$unit
--@ rolling_tokens.refuse
if used_$name >= lim_$name
    or (reserving and est_$unit ~= nil and used_$name + est_$unit > lim_$name) then
  -- Until enough tokens leave the window for this request to fit; -1 when its
  -- estimate alone exceeds the limit. When open reservations hold the rest,
  -- until the window is empty (at least 1 s): requests in flight end and
  -- settle at a time nobody can predict.
  local need = 1
  if reserving and est_$unit ~= nil then need = math.max(est_$unit, 1) end
  if reserving and est_$unit ~= nil and est_$unit > lim_$name then
    reset_$name = -1
  else
    local target, left = lim_$name - need - reserved_$unit, win_$name
    local entries = redis.call('ZRANGE', KEYS[6], '(' .. fmt(since_us), '+inf', 'BYSCORE',
      'WITHSCORES')
    for i = 1, #entries, 2 do
      left = left - token_entry_amount(entries[i])
      if target >= 0 and left <= target then
        reset_$name = math.ceil((tonumber(entries[i + 1]) + WINDOW_US - now_us) / 1000)
        break
      end
    end
    reset_$name = reset_$name or math.max(leaves_window_ms(KEYS[6], 0), 1000)
  end
  return denied('$name', '$reason', reset_$name)
end
--@ rolling_tokens.admit
trim_token_window(KEYS[1], KEYS[6], now_us)
--@ rolling_tokens.report
state('$name', lim_$name, remaining(lim_$name, win_$name + reserved_$unit),
  reset_$name or leaves_window_ms(KEYS[6], 0))
--@ rolling_tokens.overview
used[#used + 1] = '$name'
used[#used + 1] = window_tokens(KEYS[1], KEYS[6], now_us) + reserved_$unit
--@ rolling_tokens.settle
-- The actual tokens enter the token window now; the estimate left with the lease.
if not charged_window then
  charge_token_window(KEYS[1], KEYS[6], now_us, add_tokens)
  charged_window = true
end

--@ in_flight.read
-- Slots (KEYS[7], request id -> lease expiry ms) held until settled, released or
-- expired. An earlier slot of this same request id is replaced, not added.
used_$name = slots_held(KEYS[7], now_ms)
if request_id ~= '' then
  local mine = redis.call('ZSCORE', KEYS[7], request_id)
  if mine and tonumber(mine) > now_ms then used_$name = used_$name - 1 end
end
--@ in_flight.refuse
if used_$name >= lim_$name then
  -- A slot frees when a request in flight ends, which nobody can predict: 1 s,
  -- or sooner when the first slot's lease runs out before that.
  local first = redis.call('ZRANGE', KEYS[7], '(' .. fmt(now_ms), '+inf', 'BYSCORE',
    'LIMIT', 0, 1, 'WITHSCORES')
  local wait = 1000
  if first[2] and tonumber(first[2]) - now_ms < wait then wait = tonumber(first[2]) - now_ms end
  return denied('$name', '$reason', wait)
end
--@ in_flight.admit
if request_id ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', fmt(now_ms))
  redis.call('ZADD', KEYS[7], fmt(now_ms + lease_ms), request_id)
  redis.call('PEXPIRE', KEYS[7], fmt(lease_ms))
  used_$name, slot_held = used_$name + 1, 1
end
--@ in_flight.report
-- Slots never reset on a schedule: no reset time.
state('$name', lim_$name, remaining(lim_$name, used_$name), -1)
--@ in_flight.overview
used[#used + 1] = '$name'
used[#used + 1] = slots_held(KEYS[7], now_ms)

--@ fixed_requests.read
-- Requests admitted in the current fixed window of $window_s s aligned to the
-- epoch (86400: the UTC day), in the record field $aux (read into aux_$name).
-- Counted while the key has the limit (like tokens per minute), so a key
-- without it pays nothing; a limit first set mid-window starts from zero (one
-- removed and set again in the same window goes on from what it had counted).
used_$name, reset_$name = fixed_window(aux_$name, now_ms, $window_s)
--@ fixed_requests.refuse
if used_$name >= lim_$name then
  return denied('$name', '$reason', reset_$name)
end
--@ fixed_requests.admit
used_$name = used_$name + 1
rec_sets[#rec_sets + 1] = '$aux'
rec_sets[#rec_sets + 1] = fixed_value(now_ms, $window_s, used_$name)
--@ fixed_requests.report
state('$name', lim_$name, remaining(lim_$name, used_$name), reset_$name)
--@ fixed_requests.overview
used[#used + 1] = '$name'
used[#used + 1] = (fixed_window(fields['$aux'], now_ms, $window_s))
