-- read_key: a key record with its usage, at one instant of the store clock.
-- KEYS[1] record  KEYS[2] window  KEYS[3] usage
-- ARGV[1] now in µs, or '' for Redis TIME
-- Returns {} when there is no such key, else
--   {record as a flat field/value list, now_ms, period_start_ms, period_end_ms
--    (-1: never), period tokens, cost, requests, prompt, completion,
--    requests in the last 60 s}
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
local tokens, cost, requests, pt, ct = period_usage(KEYS[3],
  period_id(fields['epoch'], start_ms))
local in_window = redis.call('ZCOUNT', KEYS[2], '(' .. fmt(now_us - WINDOW_US), '+inf')
return {rec, now_ms, start_ms, end_ms, tokens, cost, requests, pt, ct, in_window}
