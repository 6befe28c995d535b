"""execute_chunk: claims, completion with the next chunk sent, and the cap on restarts of a chunk."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import redis

from jobs.chunks import execute_chunk
from jobs.executor import ChunkDeps
from jobs.models import LicenseAdd, Operation
from jobs.store import JobStore


@dataclass
class Ctx:
    """A ChunkContext whose chunks never reach Graph: deps_for fails, as for a crashing chunk."""

    store: JobStore
    worker_id: str = "w1"
    running: set[str] = field(default_factory=set)
    max_countdown_s: float = 60.0
    max_chunk_runs: int = 3
    sent: list[tuple[str, int]] = field(default_factory=list)
    crashes: int = 0

    def deps_for(self, tenant: str) -> ChunkDeps:
        self.crashes += 1
        raise RuntimeError("the worker dies while running this chunk")

    def send(self, job_id: str, n: int, countdown_s: float, budget_started_at: float | None = None) -> None:
        self.sent.append((job_id, n))


def test_a_chunk_that_keeps_dying_fails_its_users_instead_of_looping(redis_client: redis.Redis) -> None:
    store = JobStore(redis_client, retention_s=3600)
    ops = [Operation(row=i + 2, user=f"u{i}@x", add=(LicenseAdd("sku"),)) for i in range(4)]
    store.stage("j", "sim", ops, 2)
    store.commit("j", source="csv")
    assert store.next_chunk("j") == 0
    ctx = Ctx(store)
    for _ in range(3):  # each run dies (the reaper would requeue it)
        with pytest.raises(RuntimeError):
            execute_chunk(ctx, "j", 0)
    assert ctx.crashes == 3
    assert execute_chunk(ctx, "j", 0) == "done"  # the fourth start gives up on the chunk
    assert ctx.crashes == 3
    results = {op.user: res for op, res in store.iter_results("j") if res is not None}
    assert {r.reason for r in results.values()} == {"chunk_failed_repeatedly"}
    assert set(results) == {"u0@x", "u1@x"}
    assert ctx.sent == [("j", 1)]  # the job goes on with its next chunk
    assert ctx.running == set()
