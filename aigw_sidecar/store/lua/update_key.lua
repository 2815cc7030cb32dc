-- update_key: change fields of an existing key record atomically.
-- KEYS[1]  key record  aigw:key:{<key id>}  (hash)
-- ARGV[1]  now in µs, or '' for Redis TIME
-- ARGV[2]  '1' when the update touches limits (refused on legacy keys)
-- ARGV[3]  new expires_at in ms, '' to clear it, or '-' to leave it
-- ARGV[4]  number of field/value pairs to set, N
-- ARGV[5 .. 4+2N]   field, value pairs (a 'period' change starts a clean period)
-- ARGV[5+2N ..]     fields to delete (limits cleared)
-- Returns {code, now_ms, old name}: 1 updated, 0 no such key,
--   2 legacy key cannot have limits, 3 expires_at not in the future
local now_ms = floor_div(clock_us(ARGV[1]), 1000)
local cur = redis.call('HMGET', KEYS[1], 'kid', 'legacy', 'period', 'name')
if not cur[1] then
  return {0, now_ms, ''}
end
if ARGV[2] == '1' and cur[2] == '1' then
  return {2, now_ms, cur[4]}
end
if ARGV[3] ~= '-' then
  if ARGV[3] ~= '' and tonumber(ARGV[3]) <= now_ms then
    return {3, now_ms, cur[4]}
  end
  redis.call('HSET', KEYS[1], 'expires_at', ARGV[3])
end
local npairs = tonumber(ARGV[4])
for i = 0, npairs - 1 do
  local field, value = ARGV[5 + 2 * i], ARGV[6 + 2 * i]
  if field == 'period' and value ~= (cur[3] or 'never') then
    redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  end
  redis.call('HSET', KEYS[1], field, value)
end
for i = 5 + 2 * npairs, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
redis.call('HSET', KEYS[1], 'updated_at', fmt(now_ms))
return {1, now_ms, cur[4]}
