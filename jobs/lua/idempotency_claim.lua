-- Keep alive (ARGV[2] = TTL in ms) or give back (ARGV[2] = 0) a pending idempotency claim, only if
-- it is still ours: once it lapsed, another request may have claimed the key.
-- KEYS: the key's record. ARGV: our pending record, TTL ms or 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('DEL', KEYS[1])
