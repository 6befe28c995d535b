-- Reserve a job's seats per SKU unless free seats minus what the tenant's other jobs hold is short.
-- KEYS[1] the tenant's job set, KEYS[2] this job's hash; ARGV: job id, job key prefix, ttl_s,
-- force (1: reserve what is free even when short), then sku, demand, free triples.
-- Returns a flat list of sku, shortfall for the SKUs that are short (empty: reserved).
local function held_by_others(sku)
  local total = 0
  for _, other in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if other ~= ARGV[1] then
      local n = tonumber(redis.call('HGET', ARGV[2] .. other .. ':seats', sku) or '0')
      if n > 0 then total = total + n end
    end
  end
  return total
end
local short, take = {}, {}
for i = 5, #ARGV, 3 do
  local sku, demand, free = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local available = math.max(free - held_by_others(sku), 0)
  take[sku] = math.min(demand, available)
  if demand > available then
    table.insert(short, sku)
    table.insert(short, tostring(demand - available))
  end
end
if #short > 0 and ARGV[4] ~= '1' then return short end
for sku, n in pairs(take) do
  if n > 0 then redis.call('HSET', KEYS[2], sku, n) end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return short
