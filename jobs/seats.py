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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from jobs.counters import PlanCounters
from jobs.scripts import lua_script
from jobs.skus import SkuCatalog


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
        self._reserve = lua_script(client, "reserve_seats")
        self._release = lua_script(client, "release_seats")
        self._transfer = lua_script(client, "transfer_seats")

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

    def release_many(self, job_id: str, counts: Mapping[str, int]) -> int:
        """Give back seats of several SKUs in one step (a round's users); returns what is left of the last."""
        args: list[str | int] = []
        for sku, n in counts.items():
            if n > 0:
                args += [sku, int(n)]
        return int(self._release(keys=[self._job_key(job_id)], args=args)) if args else 0

    def transfer(self, tenant: str, from_job: str, to_job: str) -> None:
        """Hand every seat `from_job` holds to `to_job`, in one step (an approved job's run takes its seats)."""
        self._transfer(keys=[self._tenant_key(tenant), self._job_key(from_job), self._job_key(to_job)],
                       args=[from_job, to_job, self._retention_s])

    def release_all(self, tenant: str, job_id: str) -> None:
        """Drop every reservation of a job (it ended or was cancelled)."""
        pipe = self._redis.pipeline()
        pipe.delete(self._job_key(job_id))
        pipe.srem(self._tenant_key(tenant), job_id)
        pipe.execute()


def seat_lines(needed: Mapping[str, int], released: Mapping[str, int], catalog: SkuCatalog,
               others: Mapping[str, int]) -> list[SeatLine]:
    """Per SKU (by id): what is needed and given back, what is free (Graph's free seats minus the tenant's
    other jobs' reservations; 0 for a SKU the tenant no longer has), and what is short."""
    lines = []
    for sku_id in sorted(set(needed) | set(released)):
        sku = catalog.get(sku_id)
        free = (sku.enabled_units - sku.consumed_units if sku else 0) - others.get(sku_id, 0)
        need, back = needed.get(sku_id, 0), released.get(sku_id, 0)
        lines.append(SeatLine(sku_id=sku_id, sku=catalog.part_number(sku_id), needed=need, released=back, free=free,
                              shortfall=max(0, need - back - max(free, 0))))
    return lines


def seat_table(plan: PlanCounters, catalog: SkuCatalog | None,
               others: Callable[[], Mapping[str, int]]) -> list[SeatLine] | None:
    """A plan's seat table: empty when it needs and frees no seat, None when the catalog is unknown right now."""
    if not plan.needed and not plan.released:
        return []
    if catalog is None:
        return None
    return seat_lines(plan.needed, plan.released, catalog, others())


def with_seats(job: dict[str, Any], lines: Sequence[SeatLine] | None) -> dict[str, Any]:
    """The job JSON with its plan's raw seat counts (`needed`, `released`) replaced by the seat table (`seats`)."""
    plan = job.get("plan")
    if plan:
        plan.pop("needed", None)
        plan.pop("released", None)
        plan["seats"] = None if lines is None else [line.to_json() for line in lines]
    return job
