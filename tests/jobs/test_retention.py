"""Job data expires after the retention period from settings, so Redis does not grow without bound.

A job goes through the real code paths against a real Redis: submitted through the API (CSV, the
broker send injected), its chunks run by `execute_chunk` with the worker's store and a stand-in
Graph (one user not found, so results hold both outcomes), a second job cancelled through the API.
Then every `bl:job:*` key must carry an expiry no later than the retention period.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from config import Settings
from graphclient.client import BatchItemResult, BatchRequest
from graphclient.errors import GraphPermanentError
from graphclient.retry import RetryPolicy
from jobs.chunks import execute_chunk
from jobs.events import NO_LISTENERS, Listeners
from jobs.executor import ChunkDeps
from jobs.models import UserResult, UserStatus
from jobs.record import JobSpec
from jobs.store import JobStore, WriteGate

CORPUS = Path(__file__).parent.parent / "corpus"
KEY = "retention-key-0001"
RETENTION_DAYS = 0.01  # 864 s: short, yet longer than the 120 s per-second rate counters
RETENTION_S = int(RETENTION_DAYS * 86400)
UNLICENSED: dict[str, Any] = {"usageLocation": "US", "assignedLicenses": []}


def not_found() -> GraphPermanentError:
    return GraphPermanentError("Resource does not exist.", status=404, code="Request_ResourceNotFound")


class FakeGraph:
    """Graph's answers: users exist unlicensed and every write succeeds, except users named `gone...`."""

    def batch(self, requests: Sequence[BatchRequest]) -> dict[str, BatchItemResult]:
        return {r.id: self.send(r) for r in requests}

    def send(self, request: BatchRequest) -> BatchItemResult:
        if "/users/gone" in request.url:
            return BatchItemResult(request.id, 404, {}, None, not_found())
        return BatchItemResult(request.id, 200, {}, dict(UNLICENSED) if request.method == "GET" else {})


@dataclass
class Worker:
    """A worker process's chunk context (jobs.chunks.ChunkContext), with the real store."""

    store: JobStore
    deps: ChunkDeps
    worker_id: str = "w-retention"
    running: set[str] = field(default_factory=set)
    lease_ttl_s: float = 20.0
    max_countdown_s: float = 60.0
    max_chunk_runs: int = 50
    sent: list[tuple[str, int, float]] = field(default_factory=list)
    events: Listeners = NO_LISTENERS

    def deps_for(self, tenant: str) -> ChunkDeps:
        return self.deps

    def send(self, job_id: str, n: int, countdown_s: float, budget_started_at: float | None = None) -> None:
        self.sent.append((job_id, n, countdown_s))


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    tenants = tmp_path / "tenants.toml"
    tenants.write_text('[tenants.sim]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s3cret-value"\n')
    return Settings(redis_url=redis_url, tenants_file=tenants, api_keys=f"{KEY}:*",  # type: ignore[arg-type]
                    retention_days=RETENTION_DAYS, chunk_size=3, chunk_window=2)


@pytest.fixture
def api(settings: Settings, redis_client: redis.Redis) -> Iterator[tuple[TestClient, list[tuple[str, int, float]]]]:
    skus = json.loads((CORPUS / "subscribed_skus.json").read_text())["value"]
    sent: list[tuple[str, int, float]] = []
    app = create_app(settings, redis_client=redis_client, send=lambda j, n, c: sent.append((j, n, c)),
                     fetch_skus=lambda tenant: skus, ceiling_for=lambda tenant: None)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client, sent


@pytest.fixture
def worker(settings: Settings, redis_client: redis.Redis) -> Worker:
    store = JobStore(redis_client, retention_s=settings.retention_s)
    deps = ChunkDeps(store=store, graph=FakeGraph(), policy=RetryPolicy.from_settings(settings),  # type: ignore[arg-type]
                     batch_size=20, request_deadline_s=30.0, sleep=lambda s: None)
    return Worker(store=store, deps=deps)


def submit(client: TestClient, users: list[str]) -> str:
    body = "user,add\n" + "".join(f"{u},STANDARDPACK\n" for u in users)
    r = client.post("/v1/jobs", params={"tenant": "sim"}, content=body.encode(), headers={"Content-Type": "text/csv"})
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def run_all(worker: Worker, queue: list[tuple[str, int, float]]) -> int:
    """Run queued chunk tasks (and those they enqueue) to the end, as a worker would."""
    ran = 0
    while queue:
        job_id, n, _ = queue.pop(0)
        worker.store.heartbeat(worker.worker_id, 20, [f"{job_id}:{n}"])
        execute_chunk(worker, job_id, n)
        queue.extend(worker.sent)
        worker.sent.clear()
        ran += 1
    return ran


def job_keys(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(client.ttl(k)) for k in client.scan_iter(match="bl:job:*", count=1000)}


def test_every_job_key_expires_within_the_retention_period(
    settings: Settings, api: tuple[TestClient, list[tuple[str, int, float]]], worker: Worker,
    redis_client: redis.Redis,
) -> None:
    assert settings.retention_s == RETENTION_S
    client, sent = api
    users = [f"user{i}@contoso.example" for i in range(6)] + ["gone.away@contoso.example"]
    done_job = submit(client, users)
    cancelled_job = submit(client, [f"later{i}@contoso.example" for i in range(5)])
    assert len(sent) == 4  # a window of two chunks per job

    # Run the first job to the end; cancel the second before its chunks run.
    queue = [s for s in sent if s[0] == done_job]
    assert run_all(worker, queue) == 3
    r = client.post(f"/v1/jobs/{cancelled_job}/cancel")
    assert r.status_code == 202, r.text
    assert run_all(worker, [s for s in sent if s[0] == cancelled_job]) == 2

    done = client.get(f"/v1/jobs/{done_job}").json()
    assert (done["status"], done["succeeded"], done["failed"]) == ("completed_with_errors", 6, 1), done
    cancelled = client.get(f"/v1/jobs/{cancelled_job}").json()
    assert (cancelled["status"], cancelled["cancelled"]) == ("cancelled", 5), cancelled
    results = client.get(f"/v1/jobs/{done_job}/results").json()["value"]
    assert sorted(r["status"] for r in results) == ["failed"] + ["succeeded"] * 6

    keys = job_keys(redis_client)
    kinds = {k.split(":")[3] if k.count(":") >= 3 else "job" for k in keys}
    # Every kind of per-job key the run wrote is here (so each one's expiry is checked).
    assert {"job", "ops", "res", "att", "done", "sec"} <= kinds, sorted(keys)
    no_expiry = sorted(k for k, ttl in keys.items() if ttl == -1)
    too_long = sorted(f"{k} (ttl {ttl}s)" for k, ttl in keys.items() if ttl > RETENTION_S)
    assert not no_expiry, f"job keys that never expire: {no_expiry}"
    assert not too_long, f"job keys that outlive the {RETENTION_S}s retention: {too_long}"
    assert all(0 < ttl <= RETENTION_S for ttl in keys.values())


def test_the_recent_jobs_index_drops_jobs_older_than_retention(
    settings: Settings, api: tuple[TestClient, list[tuple[str, int, float]]], redis_client: redis.Redis,
) -> None:
    client, _ = api
    now = time.time()
    # A job created just over the retention period ago (its own keys have expired since), and one
    # created well within it.
    old_store = JobStore(redis_client, retention_s=settings.retention_s, clock=lambda: now - RETENTION_S - 5)
    recent_store = JobStore(redis_client, retention_s=settings.retention_s, clock=lambda: now - RETENTION_S / 2)
    for store, job in ((old_store, "old-job"), (recent_store, "recent-job")):
        store.stage(job, "sim", [], 3)
        store.commit(job, JobSpec(source="csv"))
    redis_client.delete("bl:job:old-job")  # what its expiry did
    assert {m.decode() for m in redis_client.zrange("bl:jobs", 0, -1)} == {"old-job", "recent-job"}

    fresh = submit(client, ["ada@contoso.example"])
    index = {m.decode() for m in redis_client.zrange("bl:jobs", 0, -1)}
    assert index == {"recent-job", fresh}
    listed = {j["id"] for j in client.get("/v1/jobs").json()["value"]}
    assert fresh in listed and "old-job" not in listed


def test_a_write_batch_left_in_flight_by_a_dead_worker_expires_within_retention(
    settings: Settings, api: tuple[TestClient, list[tuple[str, int, float]]], worker: Worker,
    redis_client: redis.Redis,
) -> None:
    client, _ = api
    job_id = submit(client, ["ada@contoso.example", "grace@contoso.example"])
    # A worker registers a write batch, and is killed before the answer (no end_writes).
    assert worker.store.begin_writes(job_id, "batch-1", deadline=time.time() + 60, rows=[2, 3]) is WriteGate.FIRST
    keys = job_keys(redis_client)
    assert f"bl:job:{job_id}:inflight" in keys
    too_long = sorted(f"{k} (ttl {ttl}s)" for k, ttl in keys.items() if not 0 < ttl <= RETENTION_S)
    assert not too_long, f"job keys that outlive the {RETENTION_S}s retention: {too_long}"


def test_results_recorded_after_a_job_expired_leave_nothing_behind_for_ever(
    settings: Settings, api: tuple[TestClient, list[tuple[str, int, float]]], worker: Worker,
    redis_client: redis.Redis,
) -> None:
    """A chunk still running when its job's data expires must not recreate keys without expiry."""
    client, _ = api
    job_id = submit(client, ["ada@contoso.example", "grace@contoso.example"])
    ops = worker.store.load_chunk(job_id, 0)
    for key in redis_client.scan_iter(match=f"bl:job:{job_id}*"):
        redis_client.delete(key)  # the retention period passed while the chunk ran
    worker.store.bump(job_id, retries=1)
    worker.store.record_results(job_id, [UserResult(row=op.row, user=op.user, status=UserStatus.SUCCEEDED, attempts=1,
                                            updated_at=1.0) for op in ops])
    keys = job_keys(redis_client)
    no_expiry = sorted(k for k, ttl in keys.items() if not 0 < ttl <= RETENTION_S)
    assert not no_expiry, f"keys recreated without expiry after the job expired: {no_expiry}"
