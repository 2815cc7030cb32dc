-- release_reservation: give back the reservation of a request that will not
-- report usage (it failed upstream, or the client went away before any usage).
-- Its parallel-request slot is freed too.
-- KEYS[1] record  KEYS[2] lease expiries (zset)  KEYS[3] lease amounts (hash)
-- KEYS[4] parallel slots (zset)
-- ARGV[1] request id   ARGV[2] now in µs, or '' for Redis TIME
-- Returns {CODE.OK, 'released', 1} released, {CODE.OK, 'released', 0} no open
-- reservation nor slot for that request id (settled, released or expired
-- already), {CODE.NOT_FOUND} unknown key.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {CODE.NOT_FOUND}
end
local now_ms = floor_div(clock_us(ARGV[2]), 1000)
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
local released = 0
if score and tonumber(score) > now_ms then
  released = 1
end
close_lease(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
sweep_leases(KEYS[1], KEYS[2], KEYS[3], now_ms)
if free_slot(KEYS[4], ARGV[1], now_ms) then
  released = 1
end
return {CODE.OK, 'released', released}
