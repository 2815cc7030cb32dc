-- claim: take a unique name (or legacy key hash) for a key id in an index hash.
-- KEYS[1]  index       aigw:names:{<workspace>} or aigw:legacy  (hash: value -> key id)
-- KEYS[2]  key list    aigw:keys:{<workspace>}  (zset, score = created ms), or absent
-- ARGV[1]  the name or hash
-- ARGV[2]  the key id claiming it
-- ARGV[3]  a key id whose claim may be taken over (a stale claim), or ''
-- Returns {1, ''} claimed (or already ours), {0, holder key id, claim age ms} taken
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder and holder ~= ARGV[2] and holder ~= ARGV[3] then
  local age = -1
  if KEYS[2] then
    local score = redis.call('ZSCORE', KEYS[2], holder)
    if score then
      age = floor_div(clock_us(''), 1000) - tonumber(score)
    end
  end
  return {0, holder, age}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if KEYS[2] then
  if holder and holder ~= ARGV[2] then
    redis.call('ZREM', KEYS[2], holder)
  end
  redis.call('ZADD', KEYS[2], 'NX', fmt(floor_div(clock_us(''), 1000)), ARGV[2])
end
return {1, ''}
