-- Compare-and-set a chunk's live state (the reaper's reclaim).
-- KEYS: live hash. ARGV: chunk n, expected state, new state.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
