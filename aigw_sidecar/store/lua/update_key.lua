-- update_key: change fields of an existing key record atomically.
-- KEYS[1]  key record      aigw:key:{<key id>}  (hash)
-- KEYS[2]  request window  aigw:win:{<key id>}  (zset, score = µs)
-- ARGV[1]  now in µs, or '' for Redis TIME
-- ARGV[2]  '1' when the update touches limits (refused on legacy keys)
-- ARGV[3]  new expires_at in ms, '' to clear it, or '-' to leave it
-- ARGV[4]  number of field/value pairs to set, N
-- ARGV[5 .. 4+2N]   field, value pairs (a 'period' change starts a clean period;
--                   a rolling requests limit on a key without one seeds the
--                   window, see below)
-- ARGV[5+2N ..]     fields to delete (limits cleared)
-- Returns {code, now_ms, old name}: CODE.OK updated, CODE.NOT_FOUND,
--   CODE.LEGACY_KEY (a legacy key cannot have limits), CODE.PAST_EXPIRY
--   (expires_at not in the future)
local SEED_MAX = 100000
local now_ms = floor_div(clock_us(ARGV[1]), 1000)
-- The record fields of the kinds whose window is seeded when the limit is added.
local seeded = {}
--@each seeded all
local fields = {'kid', 'legacy', 'period', 'name'}
for field in pairs(seeded) do fields[#fields + 1] = field end
local values = redis.call('HMGET', KEYS[1], unpack(fields))
local cur = {}
for i, field in ipairs(fields) do cur[field] = values[i] end
if not cur.kid then
  return {CODE.NOT_FOUND, now_ms, ''}
end
if ARGV[2] == '1' and cur.legacy == '1' then
  return {CODE.LEGACY_KEY, now_ms, cur.name}
end

-- A key gaining a rolling requests limit: its requests of the last minute
-- were counted per second in the ring (no window was kept). Seed the window with
-- them, newest first and at most the new limit (the newest N decide when the
-- window has room again), each at the end of its second so that none leaves
-- the window early: the limit then holds from the moment it is set.
local function seed_window(rpm_new)
  local now_s = floor_div(now_ms, 1000)
  local names = {}
  for slot = 0, 59 do names[#names + 1] = 'rq' .. slot end
  local ring = redis.call('HMGET', KEYS[1], unpack(names))
  local seconds = {}
  for i = 1, 60 do
    local sec, count = string.match(ring[i] or '', '^(%d+) (%d+)$')
    sec, count = tonumber(sec), tonumber(count)
    if sec and sec > now_s - 60 and count > 0 then
      seconds[#seconds + 1] = {sec, count}
    end
  end
  table.sort(seconds, function(a, b) return a[1] > b[1] end)
  local left = math.min(rpm_new, SEED_MAX)
  local batch = {}
  for _, entry in ipairs(seconds) do
    local n = math.min(entry[2], left)
    local score = fmt(entry[1] * 1000000 + 999999)
    for i = 1, n do
      batch[#batch + 1] = score
      batch[#batch + 1] = 's' .. fmt(entry[1]) .. '-' .. fmt(i)
      if #batch >= 1000 then
        redis.call('ZADD', KEYS[2], unpack(batch))
        batch = {}
      end
    end
    left = left - n
    if left <= 0 then break end
  end
  if #batch > 0 then
    redis.call('ZADD', KEYS[2], unpack(batch))
  end
  redis.call('PEXPIRE', KEYS[2], 61000)
end

if ARGV[3] ~= '-' then
  if ARGV[3] ~= '' and tonumber(ARGV[3]) <= now_ms then
    return {CODE.PAST_EXPIRY, now_ms, cur.name}
  end
  redis.call('HSET', KEYS[1], 'expires_at', ARGV[3])
end
local npairs = tonumber(ARGV[4])
for i = 0, npairs - 1 do
  local field, value = ARGV[5 + 2 * i], ARGV[6 + 2 * i]
  if field == 'period' and value ~= (cur.period or 'never') then
    redis.call('HINCRBY', KEYS[1], 'epoch', 1)
  end
  if seeded[field] and (not cur[field] or cur[field] == '') then
    seed_window(tonumber(value))
  end
  redis.call('HSET', KEYS[1], field, value)
end
for i = 5 + 2 * npairs, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
end
redis.call('HSET', KEYS[1], 'updated_at', fmt(now_ms))
return {CODE.OK, now_ms, cur.name}
