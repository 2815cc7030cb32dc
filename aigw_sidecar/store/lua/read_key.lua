-- read_key: a key record with its usage, at one instant of the store clock.
-- KEYS[1] record  KEYS[2] window  KEYS[3] usage  KEYS[4] lease expiries  KEYS[5] lease amounts
-- KEYS[6] token window  KEYS[7] parallel slots
-- ARGV[1] now in µs, or '' for Redis TIME
-- Returns {} when there is no such key, else
--   {record as a flat field/value list, now_ms, period_start_ms, period_end_ms
--    (-1: never), period tokens, cost, requests, prompt, completion,
--    requests in the last 60 s, reserved tokens, reserved cost, open reservations,
--    per-model usage as a flat list of model, requests, tokens, cost,
--    requests priced without a known model,
--    tokens in the token window (last 60 s), parallel slots held}
local rec = redis.call('HGETALL', KEYS[1])
if #rec == 0 then
  return {}
end
local fields = {}
for i = 1, #rec, 2 do
  fields[rec[i]] = rec[i + 1]
end
local now_us = clock_us(ARGV[1])
local now_ms = floor_div(now_us, 1000)
local start_ms, end_ms = period_bounds(fields['period'], now_ms)
local pid = period_id(fields['epoch'], start_ms)
local tokens, cost, requests, pt, ct = period_usage(KEYS[3], pid)
-- Both sources: the exact window (kept while the key has requests/min) and
-- the per-second ring (kept while it has not), so a limit added or removed in
-- the last minute does not hide requests from the overview.
local in_window = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now_us - WINDOW_US), '+inf')
  + ring_total(fields, floor_div(now_ms, 1000))
local rsv_tok, rsv_cost, rsv_count = open_reservations(KEYS[1], KEYS[4], KEYS[5], now_ms)

local per_model, unpriced = {}, 0
if redis.call('HGET', KEYS[3], 'pid') == pid then
  local usage = redis.call('HGETALL', KEYS[3])
  local by = {}
  for i = 1, #usage, 2 do
    local kind, model = string.match(usage[i], '^(m[ntc]):(.*)$')
    if kind then
      by[model] = by[model] or {0, 0, 0}
      local slot = (kind == 'mn' and 1) or (kind == 'mt' and 2) or 3
      by[model][slot] = tonumber(usage[i + 1])
    elseif usage[i] == 'unpriced' then
      unpriced = tonumber(usage[i + 1])
    end
  end
  for model, v in pairs(by) do
    per_model[#per_model + 1] = model
    per_model[#per_model + 1] = v[1]
    per_model[#per_model + 1] = v[2]
    per_model[#per_model + 1] = v[3]
  end
end
return {rec, now_ms, start_ms, end_ms, tokens, cost, requests, pt, ct, in_window,
  rsv_tok, rsv_cost, rsv_count, per_model, unpriced,
  window_tokens(KEYS[1], KEYS[6], now_us), slots_held(KEYS[7], now_ms)}
