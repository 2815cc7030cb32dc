-- rotate_key: give an existing key a new secret; the previous secret keeps
-- working until now + grace (exclusive), then stops. Only one previous secret
-- is kept: rotating again during a grace period ends the older one at once.
-- KEYS[1]  key record  aigw:key:{<key id>}  (hash)
-- ARGV[1]  now in µs, or '' for Redis TIME
-- ARGV[2]  key hash of the new secret
-- ARGV[3]  masked new secret
-- ARGV[4]  grace period in ms (0: the previous secret stops now)
-- Returns {code, now_ms}: CODE.OK rotated, CODE.NOT_FOUND, or CODE.LEGACY_KEY
--   (a legacy key is not rotatable)
local now_ms = floor_div(clock_us(ARGV[1]), 1000)
local cur = redis.call('HMGET', KEYS[1], 'kid', 'legacy', 'hash')
if not cur[1] then
  return {CODE.NOT_FOUND, now_ms}
end
if cur[2] == '1' then
  return {CODE.LEGACY_KEY, now_ms}
end
local grace_ms = tonumber(ARGV[4])
if grace_ms > 0 then
  redis.call('HSET', KEYS[1], 'prev_hash', cur[3], 'prev_until', fmt(now_ms + grace_ms))
else
  redis.call('HDEL', KEYS[1], 'prev_hash', 'prev_until')
end
redis.call('HSET', KEYS[1], 'hash', ARGV[2], 'masked', ARGV[3], 'updated_at', fmt(now_ms))
return {CODE.OK, now_ms}
