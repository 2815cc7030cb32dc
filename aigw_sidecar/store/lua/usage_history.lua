-- usage_history: a key's usage per UTC day, the last N days to today, in one read.
-- KEYS[1] record  KEYS[2] usage history (hash written by record_usage.lua; see the prelude)
-- ARGV[1] now in µs, or '' for Redis TIME
-- ARGV[2] days (1..HISTORY_DAYS, checked by the caller)
-- Returns {CODE.NOT_FOUND} when there is no such key, else {CODE.OK,
--   'first_day', the first day (days since the epoch, UTC), 'cost', 'tokens',
--   'requests': each a list of one value per day, oldest first, 0 for a day
--   without usage}, decoded by store/replies.py.
if redis.call('HEXISTS', KEYS[1], 'kid') == 0 then
  return {CODE.NOT_FOUND}
end
local today = floor_div(floor_div(clock_us(ARGV[1]), 1000), DAY_MS)
local days = tonumber(ARGV[2])
local first = today - days + 1
local fields = {'day', 'c', 't', 'r'}
for day = first, today do
  fields[#fields + 1] = 'd:' .. fmt(day)
end
local v = redis.call('HMGET', KEYS[2], unpack(fields))
local current = tonumber(v[1])
local cost, tokens, requests = {}, {}, {}
for i = 1, days do
  if first + i - 1 == current then
    cost[i], tokens[i], requests[i] = tonumber(v[2]), tonumber(v[3]), tonumber(v[4])
  else
    cost[i], tokens[i], requests[i] = history_day(v[4 + i])
  end
end
return {CODE.OK, 'first_day', first, 'cost', cost, 'tokens', tokens, 'requests', requests}
