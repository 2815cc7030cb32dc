-- claim: take a unique name (or legacy key hash) for a key id in an index hash.
-- KEYS[1]  index        aigw:names:{<workspace>} or aigw:legacy:{legacy}  (hash: value -> key id)
-- KEYS[2]  claim times  aigw:claims:{<workspace>} or aigw:legacy-claims:{legacy}
--                       (hash: value -> ms the claim was made)
-- KEYS[3]  key list     aigw:keys:{<workspace>}  (zset, score = created ms), or absent
-- ARGV[1]  the name or hash
-- ARGV[2]  the key id claiming it
-- ARGV[3]  a key id whose claim may be taken over (found stale by the caller), or ''
-- ARGV[4]  '1' when that stale holder has no key record (it then leaves the key list)
-- Returns {CODE.OK, 'claimed_ms', claim ms} claimed (or already ours: the claim
--         time is renewed), {CODE.TAKEN, 'holder', key id, 'age_ms', claim age ms} taken
local holder = redis.call('HGET', KEYS[1], ARGV[1])
local now_ms = floor_div(clock_us(''), 1000)
if holder and holder ~= ARGV[2] and holder ~= ARGV[3] then
  local at = tonumber(redis.call('HGET', KEYS[2], ARGV[1])) or 0
  return {CODE.TAKEN, 'holder', holder, 'age_ms', now_ms - at}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], fmt(now_ms))
if KEYS[3] then
  -- A stale holder whose key still exists (renamed away) stays listed.
  if holder and holder ~= ARGV[2] and ARGV[4] == '1' then
    redis.call('ZREM', KEYS[3], holder)
  end
  redis.call('ZADD', KEYS[3], 'NX', fmt(now_ms), ARGV[2])
end
return {CODE.OK, 'claimed_ms', now_ms}
