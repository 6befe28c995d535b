-- What a chunk's run reads first, in one step: the job record, chunk n's operations, and for their
-- rows whether a result is in, the planned `before` state and the write attempts sent. With
-- ARGV[3] = 1 it also counts one more start of the chunk; with ARGV[4] = 1 it takes the retry
-- budget kept when the chunk was parked.
-- KEYS: job hash, ops, results hash, before hash, attempts hash, runs hash, budget hash.
-- ARGV: chunk n, ttl_s, count the run (0/1), take the budget (0/1).
-- Returns {job hash (flat), ops JSON or nil, runs or 0, budget or nil, done flags, befores, attempts}.
local n, ttl = ARGV[1], tonumber(ARGV[2])
local job = redis.call('HGETALL', KEYS[1])
local ops = redis.call('GET', KEYS[2])
local runs = 0
if ARGV[3] == '1' then
  runs = redis.call('HINCRBY', KEYS[6], n, 1)
  redis.call('EXPIRE', KEYS[6], ttl)
end
local budget = false
if ARGV[4] == '1' then
  budget = redis.call('HGET', KEYS[7], n)
  redis.call('HDEL', KEYS[7], n)
end
local done, before, att = {}, {}, {}
-- HMGET of `rows` into `out`, a slice at a time (unpack takes a few thousand values at most).
local function hmget(key, rows, out, flag)
  for first = 1, #rows, 1000 do
    local values = redis.call('HMGET', key, unpack(rows, first, math.min(first + 999, #rows)))
    for i, v in ipairs(values) do
      if flag then out[first + i - 1] = v and 1 or 0 else out[first + i - 1] = v end
    end
  end
end
if ops then
  local rows = {}
  for _, op in ipairs(cjson.decode(ops)) do table.insert(rows, tostring(op['r'])) end
  hmget(KEYS[3], rows, done, true)  -- only whether a result is in: the results are not needed here
  hmget(KEYS[4], rows, before, false)
  hmget(KEYS[5], rows, att, false)
end
return {job, ops, runs, budget, done, before, att}
