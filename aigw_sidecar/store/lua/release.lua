-- release: give back a name (or legacy key hash) held by a key id.
-- KEYS[1]  index        aigw:names:{<workspace>} or aigw:legacy:{legacy}  (hash)
-- KEYS[2]  claim times  aigw:claims:{<workspace>} or aigw:legacy-claims:{legacy}  (hash)
-- KEYS[3]  key list     aigw:keys:{<workspace>}  (zset), or absent
-- ARGV[1]  the name or hash
-- ARGV[2]  the key id that held it
-- ARGV[3]  '1' to drop the key id from the key list too
-- ARGV[4]  release only a claim made before this ms (a rename: not one the same
--          key made again since, renaming back), or '' for any
-- Returns 1 when the claim was released, 0 when another key id holds it.
-- Only the holder can release, so a late release never frees a name that a
-- newer key has taken since.
local released = 0
local before = tonumber(ARGV[4] or '')
local claimed_at = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '') or 0
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] and (before == nil or claimed_at < before) then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  released = 1
end
if KEYS[3] and ARGV[3] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[2])
end
return released
