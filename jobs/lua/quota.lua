-- Count what each scope (a tenant, an API key) holds, from the job records, and take a new job's share
-- if every scope has room: all in one step, so two submissions never both take the last share.
-- KEYS: per scope, its holds zset (job -> +inf while active, the time a finished dry run, or a job waiting
--       for approval, stops counting),
--       its rows hash (job -> rows) and its total (rows held, the sum of that hash).
-- ARGV: job id ('' only checks for room), rows, now, dry-run hold (s), job key prefix, ttl (s), then per scope:
--       jobs limit, rows limit (0: none).
-- Returns {0} when there is room (and the job was taken), else {scope index, 'jobs' or 'rows', in use, limit}.
local job, rows, now, hold_s, prefix = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local ttl = tonumber(ARGV[6])

local function drop(holds, rows_key, total, member)
  local n = tonumber(redis.call('HGET', rows_key, member) or '0')
  redis.call('HDEL', rows_key, member)
  redis.call('ZREM', holds, member)
  redis.call('DECRBY', total, n)
end

-- Forget what no longer counts: dry runs past their hold, and jobs that ended, expired or were never committed.
local function prune(holds, rows_key, total)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', holds, '-inf', now)) do drop(holds, rows_key, total, member) end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', holds, '+inf', '+inf')) do
    local key = prefix .. member
    if redis.call('EXISTS', key) == 0 then
      drop(holds, rows_key, total, member)
    else
      local f = redis.call('HMGET', key, 'finished_at', 'dry_run', 'state', 'needs_approval')
      if f[1] or f[3] == 'failed' then
        local until_ts = tonumber(f[1] or now) + hold_s
        -- a planned job waiting for approval is held like a dry run: its run may come
        if (f[2] == '1' or f[4] == '1') and until_ts > now then
          redis.call('ZADD', holds, until_ts, member)
        else
          drop(holds, rows_key, total, member)
        end
      end
    end
  end
end

local scopes = #KEYS / 3
for s = 1, scopes do
  local holds, rows_key, total = KEYS[s * 3 - 2], KEYS[s * 3 - 1], KEYS[s * 3]
  prune(holds, rows_key, total)
  local max_jobs, max_rows = tonumber(ARGV[5 + s * 2]), tonumber(ARGV[6 + s * 2])
  local active = redis.call('ZCOUNT', holds, '+inf', '+inf')
  local held = tonumber(redis.call('GET', total) or '0')
  if max_jobs > 0 and active + 1 > max_jobs then return {s, 'jobs', active, max_jobs} end
  if max_rows > 0 and held + rows > max_rows then return {s, 'rows', held, max_rows} end
end
if job ~= '' then
  for s = 1, scopes do
    local holds, rows_key, total = KEYS[s * 3 - 2], KEYS[s * 3 - 1], KEYS[s * 3]
    redis.call('ZADD', holds, '+inf', job)
    redis.call('HSET', rows_key, job, rows)
    redis.call('INCRBY', total, rows)
    for _, key in ipairs({holds, rows_key, total}) do redis.call('EXPIRE', key, ttl) end
  end
end
return {0}
