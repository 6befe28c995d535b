-- Record what the scan of a job built from the tenant found, once: its size, outcome, warnings and summary.
-- Returns 1 when this call recorded it, 0 when a scan of the job had already, -1 when the job is gone.
-- KEYS: job hash. ARGV: total, chunks, outcome, warnings JSON, summary JSON.
local job = KEYS[1]
if redis.call('EXISTS', job) == 0 then return -1 end
if redis.call('HEXISTS', job, 'scan_outcome') == 1 then return 0 end
redis.call('HSET', job, 'total', ARGV[1], 'chunks', ARGV[2], 'scan_outcome', ARGV[3], 'warnings', ARGV[4],
           'scan_summary', ARGV[5])
return 1
