-- create_key: write a new key record, all fields at once, or nothing.
-- KEYS[1]  key record  aigw:key:{<key id>}  (hash)
-- ARGV[1]  now in µs, or '' for Redis TIME
-- ARGV[2]  expires_at in ms, or '' for never
-- ARGV[3..] field, value pairs of the record
-- Returns {code, now_ms}: CODE.OK created, CODE.KEY_ID_TAKEN, or CODE.PAST_EXPIRY
--   (expires_at not in the future)
local now_ms = floor_div(clock_us(ARGV[1]), 1000)
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {CODE.KEY_ID_TAKEN, now_ms}
end
if ARGV[2] ~= '' and tonumber(ARGV[2]) <= now_ms then
  return {CODE.PAST_EXPIRY, now_ms}
end
local fields = {}
for i = 3, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], 'created_at', fmt(now_ms), 'updated_at', fmt(now_ms),
  'expires_at', ARGV[2], unpack(fields))
return {CODE.OK, now_ms}
