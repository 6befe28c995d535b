-- Set the rows a job holds to what it turned out to hold (a scan-built job, counted one row until its
-- scan ended), in each scope still counting it; the scopes' totals move by the difference.
-- KEYS: per scope, its rows hash and its total. ARGV: job id, rows.
local rows = tonumber(ARGV[2])
for i = 1, #KEYS, 2 do
  local old = redis.call('HGET', KEYS[i], ARGV[1])
  if old then
    redis.call('HSET', KEYS[i], ARGV[1], rows)
    redis.call('INCRBY', KEYS[i + 1], rows - tonumber(old))
  end
end
return 1
