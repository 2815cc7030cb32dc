-- delete_key: remove every trace of one API key kept under its hash tag.
-- KEYS[1] record  KEYS[2] window  KEYS[3] usage  KEYS[4] seen request ids
-- KEYS[5] lease expiries  KEYS[6] lease amounts  KEYS[7] token window
-- KEYS[8] parallel slots
-- Returns {1, workspace, name, key hash, legacy} or {0} when there is no such key.
-- The name and legacy-hash claims live in other slots; the caller releases
-- them afterwards, and a claim whose record is gone counts as stale.
local rec = redis.call('HMGET', KEYS[1], 'kid', 'ws', 'name', 'hash', 'legacy')
if not rec[1] then
  return {0}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
return {1, rec[2], rec[3], rec[4], rec[5] or '0'}
