-- delete_key: remove every trace of one API key kept under its hash tag.
-- KEYS[1] record  KEYS[2] window  KEYS[3] usage  KEYS[4] seen request ids
-- KEYS[5] lease expiries  KEYS[6] lease amounts  KEYS[7] token window
-- KEYS[8] parallel slots  KEYS[9] daily usage history
-- Returns {CODE.OK, 'workspace', ws, 'name', name, 'key_hash', hash, 'legacy', '0'|'1'},
-- or {CODE.NOT_FOUND} when there is no such key.
-- The name and legacy-hash claims live in other slots; the caller releases
-- them afterwards, and a claim whose record is gone counts as stale.
local rec = redis.call('HMGET', KEYS[1], 'kid', 'ws', 'name', 'hash', 'legacy')
if not rec[1] then
  return {CODE.NOT_FOUND}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8],
  KEYS[9])
return {CODE.OK, 'workspace', rec[2], 'name', rec[3], 'key_hash', rec[4], 'legacy', rec[5] or '0'}
