-- Give an idempotency key back after a refused submission, only if it is still our pending claim.
-- KEYS: the key's record. ARGV: our pending record.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
