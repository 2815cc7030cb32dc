-- read_key: a key record with its usage, at one instant of the store clock.
-- KEYS[1] record  KEYS[2] window  KEYS[3] usage  KEYS[4] lease expiries  KEYS[5] lease amounts
-- KEYS[6] token window  KEYS[7] parallel slots
-- ARGV[1] now in µs, or '' for Redis TIME
-- Returns {} when there is no such key, else
--   {record as a flat field/value list, name, value, name, value, ...} with the
--   names now_ms, period_start_ms, period_end_ms (-1: never), period_tokens,
--   period_cost, period_requests, period_prompt_tokens,
--   period_completion_tokens, reserved_tokens, reserved_cost,
--   open_reservations, unpriced_requests (reports priced without a known
--   model), per_model (a flat list of model, requests, tokens, cost), and
--   used (a flat list of limit kind name, what it counts now), decoded by
--   store/replies.py.
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
local period_tokens, period_micro_usd, requests, pt, ct = period_usage(KEYS[3], pid)
local reserved_tokens, reserved_micro_usd, rsv_count = open_reservations(KEYS[1], KEYS[4],
  KEYS[5], now_ms)
-- What every limit kind counts now, whether or not the key has the limit.
local now_s, since_us = floor_div(now_ms, 1000), now_us - WINDOW_US
local used = {}
--@each overview all

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
return {rec, 'now_ms', now_ms, 'period_start_ms', start_ms, 'period_end_ms', end_ms,
  'period_tokens', period_tokens, 'period_cost', period_micro_usd, 'period_requests', requests,
  'period_prompt_tokens', pt, 'period_completion_tokens', ct,
  'reserved_tokens', reserved_tokens, 'reserved_cost', reserved_micro_usd,
  'open_reservations', rsv_count,
  'unpriced_requests', unpriced, 'per_model', per_model, 'used', used}
