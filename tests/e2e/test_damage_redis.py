"""Damage test 2: Redis (job store, throttle and Celery broker at once) goes away in the middle of a job.

With the append-only file on, queued work and recorded results survive a restart, clean (SIGTERM)
or not (SIGKILL); workers reconnect; chunks whose task died on the outage are requeued by the
reaper, and users whose write went out while Redis was away are read back from Graph instead of
being written again. When only the connections drop (Redis stays up), kombu hands the messages of
running chunks back to the queue: a chunk still running must not start a second time next to
itself. In every case nothing is lost and nothing is written or counted twice.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.models import TERMINAL_JOB_STATUSES
from tests.e2e.stack import Stack, check_graph_state, plan_license_changes

# Each runs in 15 to 30 s (stack start included); the job's own deadline fails first, with logs.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
JOB_TIMEOUT_S = 120
USERS = 1000


# Each test runs once per broker (tests/e2e/conftest.py): with RabbitMQ, only the job store goes away.
@pytest.fixture
def stack(tmp_path: Path, broker_url: str | None) -> Iterator[Stack]:
    env = {"BULKLICENSE_CHUNK_SIZE": "50", "BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.2",
           "BULKLICENSE_LEASE_TTL_S": "6", "BULKLICENSE_HEARTBEAT_INTERVAL_S": "1",
           "BULKLICENSE_REAPER_INTERVAL_S": "2"}
    s = Stack(tmp_path, env=env, redis_appendonly=True, broker_url=broker_url, sim_args=[
        "--users", "1600", "--seed", "12", "--latency-ms", "100", "--latency-jitter-ms", "40",
        "--write-limit", "100/1", "--tenant-write-limit", "none"])
    try:
        yield s.start(workers=2)
    finally:
        s.stop()


def _recorded(stack: Stack, job_id: str) -> tuple[int, int]:
    """(per-user results stored, the job's terminal counters added up), read from Redis."""
    with stack.redis_client() as r:
        counters = r.hmget(f"bl:job:{job_id}", "succeeded", "failed", "cancelled")
        return int(r.hlen(f"bl:job:{job_id}:res")), sum(int(c or 0) for c in counters)


def test_redis_restarts_mid_job_and_no_result_is_lost(stack: Stack) -> None:
    started = time.monotonic()
    with stack.control() as control:
        before = control.get("/users").json()["value"]
        skus = control.get("/skus").json()["value"]
    rows, expected = plan_license_changes(before, skus, USERS, random.Random(12))
    job_id = stack.submit_csv(rows)["id"]

    # Two restarts: a clean stop (SIGTERM, the AOF is flushed) and a crash (SIGKILL).
    restarts = [(0.30, False), (0.65, True)]
    seen: list[dict[str, Any]] = []
    outages: list[tuple[int, float]] = []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    job: dict[str, Any] | None = None
    while True:
        assert time.monotonic() < deadline, f"job not finished: {job}\n{stack.worker_logs()[-4000:]}"
        exited = [(i + 1, p.returncode) for i, p in enumerate(stack.workers) if p.poll() is not None]
        assert not exited, f"worker(s) exited after a Redis restart: {exited}\n{stack.worker_logs()[-6000:]}"
        current = stack.job_or_none(job_id)
        if current is not None:
            job = current
            seen.append(job)
        if job is not None and job["status"] in TERMINAL_JOB_STATUSES:
            break
        done = job["succeeded"] + job["failed"] + job["cancelled"] if job else 0
        if restarts and job is not None and job["pending"] and done >= restarts[0][0] * USERS:
            _, kill = restarts.pop(0)
            recorded = _recorded(stack, job_id)
            t0 = time.monotonic()
            stack.restart_redis(kill=kill, down_s=1.0)
            outages.append((done, time.monotonic() - t0))
            # Everything recorded before the restart is still there after it.
            after = _recorded(stack, job_id)
            assert after[0] >= recorded[0] and after[1] >= recorded[1], (
                f"Redis {'SIGKILL' if kill else 'restart'} lost results: {recorded} -> {after}")
        time.sleep(0.1)

    assert len(outages) == 2, f"the job ended before both restarts: {outages}"
    results = stack.results(job_id)
    failed = [r for r in results if r["status"] != "succeeded"]
    assert not failed, (Counter((r["status"], r["reason"]) for r in failed), failed[:3])
    assert job["status"] == "completed", job
    assert job["succeeded"] == job["total"] == len(rows) and job["pending"] == 0
    assert len(results) == len(rows)
    assert Counter(r["user"] for r in results) == Counter(row["user"] for row in rows)
    # Progress never went backwards across the restarts: nothing recorded was lost.
    done = [j["succeeded"] + j["failed"] + j["cancelled"] for j in seen]
    assert done == sorted(done), "a recorded result disappeared"
    check_graph_state(stack, before, expected, results)

    logs = stack.worker_logs()
    skipped = dict(Counter(re.findall(r"skipped: (\w+)", logs)))
    broker = "RabbitMQ" if stack.broker_url else "Redis"
    print(f"{broker} broker: redis restarted twice (after {outages[0][0]} and {outages[1][0]} results, down "
          f"{outages[0][1]:.1f}s / {outages[1][1]:.1f}s); job took {time.monotonic() - started:.1f}s; "
          f"{len(re.findall('requeueing chunk', logs))} chunk requeues; "
          f"{sum(r['detail'] == 'already in the requested state' for r in results)} users read back as done; "
          f"attempts: {dict(sorted(Counter(r['attempts'] for r in results).items()))}; "
          f"skipped deliveries: {skipped}")


def test_broker_connections_dropped_mid_job_no_chunk_runs_twice_at_once(stack: Stack) -> None:
    """Redis stays up but drops every client connection (a network blip, a proxy or failover).

    The worker reconnects, and kombu puts the messages of the chunks it is still running back on
    the queue: the same worker receives them again. A chunk must not then run a second time next
    to itself, or users it has not recorded yet get their write sent twice.
    """
    with stack.control() as control:
        before = control.get("/users").json()["value"]
        skus = control.get("/skus").json()["value"]
    rows, expected = plan_license_changes(before, skus, USERS, random.Random(14))
    job_id = stack.submit_csv(rows)["id"]
    blips = [0.25, 0.55]
    dropped: list[int] = []
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        assert time.monotonic() < deadline, f"job not finished\n{stack.worker_logs()[-4000:]}"
        exited = [(i + 1, p.returncode) for i, p in enumerate(stack.workers) if p.poll() is not None]
        assert not exited, f"worker(s) exited after the connections dropped: {exited}\n{stack.worker_logs()[-6000:]}"
        job = stack.job_or_none(job_id)
        if job is not None and job["status"] in TERMINAL_JOB_STATUSES:
            break
        done = job["succeeded"] + job["failed"] + job["cancelled"] if job else 0
        if blips and job is not None and job["pending"] and done >= blips[0] * USERS:
            blips.pop(0)
            with stack.redis_client() as r:
                dropped.append(int(r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")))
        time.sleep(0.1)

    assert len(dropped) == 2, "the job ended before both connection drops"
    results = stack.results(job_id)
    failed = [r for r in results if r["status"] != "succeeded"]
    assert not failed, (Counter((r["status"], r["reason"]) for r in failed), failed[:3])
    assert job["status"] == "completed" and job["succeeded"] == job["total"] == len(rows), job
    assert Counter(r["user"] for r in results) == Counter(row["user"] for row in rows)
    check_graph_state(stack, before, expected, results)
    logs = stack.worker_logs()
    skipped = dict(Counter(re.findall(r"skipped: (\w+)", logs)))
    broker = "RabbitMQ" if stack.broker_url else "Redis"
    print(f"{broker} broker: client connections dropped twice ({dropped} connections); "
          f"{len(re.findall('Restoring', logs))} unacked restores by kombu, "
          f"{len(re.findall('requeueing chunk', logs))} chunk requeues, "
          f"skipped deliveries: {skipped}")
