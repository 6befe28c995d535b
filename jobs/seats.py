"""The seat ledger: seats each running job has reserved per SKU, shared by every API and worker.

Graph's free seats (`prepaidUnits.enabled − consumedUnits`) do not know about jobs that are
queued or running: two batches submitted in the same second would both count on the last seats.
So a real job reserves its seat demand when it is accepted, in one atomic step that also checks
free seats minus what other jobs of the tenant hold (a job that may wait for seats reserves what is
free of its demand, no more); its reservation shrinks as its users take
their seats (they then show in `consumedUnits`) or turn out not to need one, and is dropped when
the job ends.

Keys:

    bl:seats:{tenant}          set    jobs holding reservations in the tenant
    bl:job:{id}:seats          hash   skuId -> seats the job still holds (expires with the job)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import redis

# KEYS[1] the tenant's job set, KEYS[2] this job's hash; ARGV: job id, job key prefix, ttl_s,
# force (1: reserve what is free even when short), then sku, demand, free triples.
# Returns a flat list of sku, shortfall for the SKUs that are short (empty: reserved).
_RESERVE = """
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
"""

# KEYS[1] this job's hash; ARGV: sku, n pairs. Lowers each reservation, never below zero; returns
# what is left of the last one.
_RELEASE = """
local last = 0
for i = 1, #ARGV, 2 do
  local left = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') - tonumber(ARGV[i + 1])
  if left > 0 then redis.call('HSET', KEYS[1], ARGV[i], left) else redis.call('HDEL', KEYS[1], ARGV[i]) end
  last = math.max(left, 0)
end
return last
"""


@dataclass(frozen=True)
class SeatLine:
    """One SKU of a seat check: what a job needs and gives back, what is free, what is missing."""

    sku_id: str
    sku: str
    needed: int
    released: int
    free: int
    shortfall: int

    def to_json(self) -> dict[str, object]:
        """The API's shape."""
        return {"sku_id": self.sku_id, "sku": self.sku, "needed": self.needed, "released": self.released,
                "free": self.free, "shortfall": self.shortfall}


class SeatLedger:
    """Reservations of seats by running jobs, per tenant and SKU, in Redis."""

    def __init__(self, client: redis.Redis, *, retention_s: int) -> None:
        self._redis = client
        self._retention_s = retention_s
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def _tenant_key(tenant: str) -> str:
        return f"bl:seats:{tenant}"

    @staticmethod
    def _job_key(job_id: str) -> str:
        return f"bl:job:{job_id}:seats"

    def reserve(
        self, tenant: str, job_id: str, demand: Mapping[str, int], free: Mapping[str, int], *, force: bool = False
    ) -> dict[str, int]:
        """Reserve `demand` seats per SKU unless free minus others' reservations is short.

        Returns the shortfall per short SKU (empty when reserved). With `force` (a job that waits for
        seats) what is free is reserved and the rest is not: the job takes further seats as they
        appear, as any later job may, so that one job cannot hold a tenant's seats it cannot use yet.
        """
        args: list[str | int] = [job_id, "bl:job:", self._retention_s, 1 if force else 0]
        for sku, n in sorted(demand.items()):
            args += [sku, int(n), int(free.get(sku, 0))]
        raw = self._reserve(keys=[self._tenant_key(tenant), self._job_key(job_id)], args=args)
        items = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
        return {items[i]: int(items[i + 1]) for i in range(0, len(items), 2)}

    def held_by_others(self, tenant: str, job_id: str | None = None) -> dict[str, int]:
        """Seats reserved per SKU by the tenant's jobs other than `job_id`."""
        totals: dict[str, int] = {}
        for raw in self._redis.smembers(self._tenant_key(tenant)):
            other = raw.decode() if isinstance(raw, bytes) else str(raw)
            if other == job_id:
                continue
            held = self._redis.hgetall(self._job_key(other))
            if not held:
                self._redis.srem(self._tenant_key(tenant), other)  # finished or expired
            for sku, n in held.items():
                key = sku.decode() if isinstance(sku, bytes) else str(sku)
                totals[key] = totals.get(key, 0) + int(n)
        return totals

    def held(self, job_id: str) -> dict[str, int]:
        """Seats the job still holds per SKU."""
        raw = self._redis.hgetall(self._job_key(job_id))
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}

    def release(self, job_id: str, sku_id: str, n: int = 1) -> int:
        """Give back `n` seats of a SKU (a user took its seat, or needs none); returns what is left."""
        return self.release_many(job_id, {sku_id: n})

    def release_many(self, job_id: str, counts: Mapping[str, int]) -> int:
        """Give back seats of several SKUs in one step (a round's users); returns what is left of the last."""
        args: list[str | int] = []
        for sku, n in counts.items():
            if n > 0:
                args += [sku, int(n)]
        return int(self._release(keys=[self._job_key(job_id)], args=args)) if args else 0

    def release_all(self, tenant: str, job_id: str) -> None:
        """Drop every reservation of a job (it ended or was cancelled)."""
        pipe = self._redis.pipeline()
        pipe.delete(self._job_key(job_id))
        pipe.srem(self._tenant_key(tenant), job_id)
        pipe.execute()
