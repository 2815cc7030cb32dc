-- usage_history: a key's usage per UTC day, the last N days to today, in one read.
-- KEYS[1] record  KEYS[2] usage history (hash written by record_usage.lua)
-- ARGV[1] now in µs, or '' for Redis TIME
-- ARGV[2] days (1..HISTORY_DAYS, checked by the caller)
-- Returns {CODE.NOT_FOUND} when there is no such key, else {CODE.OK,
--   'first_day', the first day (days since the epoch, UTC), 'cost', 'tokens',
--   'requests': each a list of one value per day, oldest first, 0 for a day
--   without usage}, decoded by store/replies.py. Fields of days outside the
--   window are never read.
if redis.call('HEXISTS', KEYS[1], 'kid') == 0 then
  return {CODE.NOT_FOUND}
end
local today = floor_div(floor_div(clock_us(ARGV[1]), 1000), DAY_MS)
local days = tonumber(ARGV[2])
local first = today - days + 1
local fields = {}
for day = first, today do
  local d = fmt(day)
  fields[#fields + 1] = 'c:' .. d
  fields[#fields + 1] = 't:' .. d
  fields[#fields + 1] = 'r:' .. d
end
local values = redis.call('HMGET', KEYS[2], unpack(fields))
local cost, tokens, requests = {}, {}, {}
for i = 1, days do
  cost[i] = tonumber(values[3 * i - 2]) or 0
  tokens[i] = tonumber(values[3 * i - 1]) or 0
  requests[i] = tonumber(values[3 * i]) or 0
end
return {CODE.OK, 'first_day', first, 'cost', cost, 'tokens', tokens, 'requests', requests}
