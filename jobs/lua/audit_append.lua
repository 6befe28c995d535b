-- Append one audit event, then trim the stream by size and by age.
-- The id is the caller's clock in ms, moved forward when needed so ids never go backwards (several
-- API processes and workers append, and their clocks differ slightly).
-- Events the size bound pushes out are counted in KEYS[2] under ARGV[5] (unless it is empty), so
-- that a trail filling up can be noticed; those older than the retention period go silently.
-- KEYS: the stream, the trimmed-events counter hash.
-- ARGV: now ms, max events, oldest ms kept, stream TTL s, counter field, field, value, ...
-- Returns {the new entry's id, events trimmed by size}.
local ms = tonumber(ARGV[1])
local seq = 0
local before = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  before = redis.call('XLEN', KEYS[1])
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local last_ms, last_seq = string.match(info[i + 1], '^(%d+)-(%d+)$')
      if ms <= tonumber(last_ms) then
        ms = tonumber(last_ms)
        seq = tonumber(last_seq) + 1
      end
    end
  end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], string.format('%d-%d', ms, seq),
                      unpack(ARGV, 6))
local trimmed = before + 1 - redis.call('XLEN', KEYS[1])
if trimmed > 0 and ARGV[5] ~= '' then
  redis.call('HINCRBY', KEYS[2], ARGV[5], trimmed)
end
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {id, trimmed}
