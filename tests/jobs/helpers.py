"""Builders shared by the job-domain tests: operations, users of the fake Graph, chunk dependencies, jobs."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from graphclient.client import GraphClient
from graphclient.retry import RetryPolicy
from jobs.events import NO_LISTENERS, Listeners
from jobs.executor import ChunkDeps
from jobs.models import License, Operation, UserResult
from jobs.record import JobSpec, Pause
from jobs.store import JobStore
from tests.fakes import FakeClock, RecordingSleep, RecordingThrottle, Tenant

EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"


def user(*skus: str, location: str | None = "US") -> dict[str, Any]:
    return {"usageLocation": location, "assignedLicenses": [{"skuId": s, "disabledPlans": []} for s in skus]}


def op(row: int, upn: str, add: tuple[str, ...] = (), remove: tuple[str, ...] = (), location: str | None = None,
       plans: tuple[str, ...] = ()) -> Operation:
    return Operation(row=row, user=upn, add=tuple(License(s, plans) for s in add), remove=remove,
                     usage_location=location)


def make_deps(store: JobStore, tenant: Tenant, clock: FakeClock, *, max_attempts: int = 4,
              max_inline_wait_s: float = 30.0, batch_size: int = 20) -> tuple[ChunkDeps, RecordingSleep]:
    sleep = RecordingSleep(clock)
    http = httpx.Client(transport=httpx.MockTransport(tenant))
    graph = GraphClient(http, base_url="https://graph.test", throttle=RecordingThrottle(), timeout_s=5)
    policy = RetryPolicy(max_attempts=max_attempts, max_total_s=3600, backoff_base_s=1, backoff_max_s=8,
                         max_inline_wait_s=max_inline_wait_s)
    deps = ChunkDeps(store=store, graph=graph, policy=policy, batch_size=batch_size, request_deadline_s=60,
                     clock=clock, sleep=sleep, rng=random.Random(1))
    return deps, sleep


def job(store: JobStore, ops: list[Operation]) -> str:
    store.stage("job", "sim", ops, 100)
    store.commit("job", JobSpec(source="csv"))
    return "job"


def pause_of(store: JobStore, job_id: str) -> Pause | None:
    """The job's pause, if it is paused."""
    record = store.job(job_id)
    return None if record is None else record.pause


def reason_of(store: JobStore, job_id: str) -> str | None:
    """Why the job is paused (None: it is not)."""
    pause = pause_of(store, job_id)
    return None if pause is None else pause.reason.value


def next_probe_of(store: JobStore, job_id: str) -> float | None:
    """When the paused job is probed next."""
    pause = pause_of(store, job_id)
    return None if pause is None else pause.next_probe_at


def results(store: JobStore, job_id: str) -> dict[str, UserResult]:
    return {op.user: res for op, res in store.iter_results(job_id) if res is not None}


Sent = tuple[str, int, float, float | None]
UNLICENSED = {"usageLocation": "US", "assignedLicenses": []}


@dataclass
class Ctx:
    """A worker's ChunkContext with the real store; `deps_for` answers through `deps_for_tenant`."""

    store: JobStore
    deps_for_tenant: Callable[[str], ChunkDeps]
    worker_id: str = "w1"
    running: set[str] = field(default_factory=set)
    lease_ttl_s: float = 20.0
    max_countdown_s: float = 60.0
    max_chunk_runs: int = 3
    chunk_window: int = 4
    sent: list[Sent] = field(default_factory=list)
    events: Listeners = NO_LISTENERS
    asked_for: list[str] = field(default_factory=list)

    def deps_for(self, tenant: str) -> ChunkDeps:
        self.asked_for.append(tenant)
        return self.deps_for_tenant(tenant)

    def send(self, job_id: str, n: int, countdown_s: float, budget_started_at: float | None = None) -> None:
        self.sent.append((job_id, n, countdown_s, budget_started_at))


def dispatched_job(store: JobStore, users: int = 4, chunk_size: int = 2, tenant: str = "sim") -> str:
    """A committed job whose first chunk has been dispatched, as the API leaves it."""
    ops = [Operation(row=i + 2, user=f"u{i}@x", add=(License("sku"),)) for i in range(users)]
    store.stage("j", tenant, ops, chunk_size)
    store.commit("j", JobSpec(source="csv"))
    assert store.next_chunk("j") == 0
    return "j"
