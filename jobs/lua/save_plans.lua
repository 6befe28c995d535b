-- Keep each user's planned `before` state once and count the plan once per user, whatever the
-- restarts. KEYS: before hash, plan counters hash. ARGV: ttl_s, then per user: row, before JSON,
-- k, then k counter names. Returns {users planned so far, then the rows whose plan was new}.
local before, plan = KEYS[1], KEYS[2]
local new_rows = {}
local i = 2
while i <= #ARGV do
  local row, state, k = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if redis.call('HSETNX', before, row, state) == 1 then
    for j = 1, k do redis.call('HINCRBY', plan, ARGV[i + 2 + j], 1) end
    redis.call('HINCRBY', plan, 'planned', 1)
    table.insert(new_rows, row)
  end
  i = i + 3 + k
end
redis.call('EXPIRE', before, tonumber(ARGV[1]))
redis.call('EXPIRE', plan, tonumber(ARGV[1]))
table.insert(new_rows, 1, tonumber(redis.call('HGET', plan, 'planned') or '0'))
return new_rows
