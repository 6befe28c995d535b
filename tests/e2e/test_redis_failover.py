"""Redis fails over in the middle of a job: the primary is killed (kill -9), Sentinel promotes the replica.

The stack (API, two workers, Celery on Redis through kombu's Sentinel transport) knows Redis only by
its sentinels. Before the kill, the test makes the replica miss the primary's latest writes on
purpose: graphsim answers every request 4 s after applying it, and as soon as write batches are
applied and waiting for their answers, the replication stream is stopped (a paused TCP proxy
between replica and primary). The answers then arrive, and their results are recorded on the
primary only; the primary is killed, so those results are really lost, as asynchronous
replication allows. While replication stands still, no new write batch may go out: a write waits
until a replica holds the plans it relies on (Redis WAIT), so what is lost is only results of
writes Graph already applied, and plans of users not yet written.

Then, user by user (the API having answered 503 while there was no primary): the job goes on after
the promotion and completes; every user has exactly one result and the counters add up; graphsim
applied exactly one write per user (none twice), each one registered on the replica before it went
out; each user whose recorded result was lost was read again and found done (`already in the
requested state`) with the `before` state it had in the seed, so a rollback would still undo it.
Redis and the sentinels require passwords, and neither appears in any log.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.models import TERMINAL_JOB_STATUSES
from tests.e2e.leaks import needles_for
from tests.e2e.sentinel import MASTER_NAME, SentinelGroup
from tests.e2e.stack import Stack, check_graph_state, plan_license_changes, user_state

# About 20 s (stack start included); the job's own deadline fails first, with logs.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

USERS = 600
SLOW_S = 4.0  # graphsim holds every answer this long after applying the request
ALREADY_DONE = "already in the requested state"
PASSWORD = "fail@over-redis-5d1c9a"  # travels URL-encoded in BULKLICENSE_REDIS_URL
SENTINEL_PASSWORD = "sentinel-pw-8e2b47"


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    g = SentinelGroup(tmp_path / "redis", password=PASSWORD, sentinel_password=SENTINEL_PASSWORD)
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture
def stack(tmp_path: Path, group: SentinelGroup) -> Iterator[Stack]:
    env = {"BULKLICENSE_REDIS_SENTINEL_MASTER": MASTER_NAME, "BULKLICENSE_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
           "BULKLICENSE_REDIS_WAIT_TIMEOUT_S": "0.5", "BULKLICENSE_CHUNK_SIZE": "25", "BULKLICENSE_CHUNK_WINDOW": "8",
           "BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.2",
           "BULKLICENSE_LEASE_TTL_S": "5", "BULKLICENSE_HEARTBEAT_INTERVAL_S": "1",
           "BULKLICENSE_REAPER_INTERVAL_S": "1", "BULKLICENSE_REQUEUE_QUEUED_AFTER_S": "5"}
    env["BULKLICENSE_REDIS_SENTINELS"] = group.sentinel_setting
    # No write budget: a batch confirmed by the replica goes out at once, never after a throttle wait.
    s = Stack(tmp_path, env=env, sim_args=["--users", "800", "--seed", "21", "--latency-ms", "30",
                                           "--latency-jitter-ms", "10", "--write-limit", "none",
                                           "--tenant-write-limit", "none"])
    s.redis = group  # type: ignore[assignment]  # the stack starts and stops it
    try:
        yield s.start(workers=2)
    finally:
        s.stop()


def applied_writes(stack: Stack, since: float = 0.0) -> list[dict[str, Any]]:
    with stack.control() as control:
        entries = control.get("/writes", params={"since": since}).json()["value"]
    return [w for w in entries if isinstance(w["status"], int) and 200 <= w["status"] < 300]


def lost_rows(group: SentinelGroup, job_id: str) -> set[int]:
    """Rows whose result the primary holds and the (frozen) replica does not."""
    assert group.replica is not None
    key = f"bl:job:{job_id}:res"
    with group.primary.client(socket_timeout=2) as primary, group.replica.client(socket_timeout=2) as replica:
        return {int(r) for r in primary.hkeys(key)} - {int(r) for r in replica.hkeys(key)}


def test_the_primary_is_killed_mid_job_and_no_user_is_lost_or_written_twice(
        stack: Stack, group: SentinelGroup) -> None:
    started = time.monotonic()
    assert group.replica is not None and group.proxy is not None
    with stack.control() as control:
        before = control.get("/users").json()["value"]
        skus = control.get("/skus").json()["value"]
    rows, expected = plan_license_changes(before, skus, USERS, random.Random(21))
    job_id = stack.submit_csv(rows)["id"]
    seed = {u["userPrincipalName"]: user_state(u) for u in before}
    row_user = {i + 2: row["user"] for i, row in enumerate(rows)}  # CSV line numbers (the header is line 1)

    # 1. A third of the way in, Graph starts holding its answers; once writes wait for theirs, the
    #    replica stops receiving anything.
    job = stack.wait_until(job_id, lambda j: j["succeeded"] >= USERS // 3, timeout_s=60)
    with stack.control() as control:
        control.post("/config", json={"fault_slow": 1.0, "slow_s": SLOW_S})
    slow_from = time.time()
    # Writes Graph applied from now on have their answers held SLOW_S: let some go out, then pause.
    while not (in_flight := applied_writes(stack, slow_from)) or (
            len(in_flight) < 20 and time.time() < in_flight[0]["ts"] + SLOW_S / 3):
        assert time.time() - slow_from < 30, "no write went out"
        time.sleep(0.05)
    group.proxy.pause()
    paused_at = time.time()
    assert paused_at < min(w["ts"] for w in in_flight) + SLOW_S - 1, "the pause came after answers returned"

    # 2. The held answers come back and are recorded on the primary only; no new write may go out
    #    meanwhile, since the replica confirms nothing (checked at the end, user by user).
    time.sleep(SLOW_S + 1.5)
    lost = lost_rows(group, job_id)
    written_in_window = {w["user"] for w in applied_writes(stack, slow_from)}

    # 3. kill -9 the primary; Sentinel promotes the replica, which never got those results.
    group.primary.kill()
    group.proxy.close()
    killed_at = time.monotonic()
    with stack.api() as api:  # no primary for a second or two: an outage, answered as one
        during = api.get(f"/v1/jobs/{job_id}")
    assert (during.status_code, during.headers.get("retry-after")) == (503, "5"), during.text
    with stack.control() as control:
        control.post("/config", json={"fault_slow": 0.0})
    while group.master_port() != group.replica.port:
        assert time.monotonic() - killed_at < 30, "no promotion within 30 s"
        time.sleep(0.1)
    promoted_s = time.monotonic() - killed_at

    # 4. The job goes on against the new primary to its end.
    deadline = time.monotonic() + 120
    while True:
        exited = [p.returncode for p in stack.workers if p.poll() is not None]
        assert not exited, f"a worker exited after the failover: {exited}\n{stack.worker_logs()[-4000:]}"
        job = stack.job_or_none(job_id) or job
        if job["status"] in TERMINAL_JOB_STATUSES:
            break
        assert time.monotonic() < deadline, f"job not finished after the failover: {job}\n" \
                                            f"{stack.worker_logs()[-4000:]}"
        time.sleep(0.2)
    finished_s = time.monotonic() - killed_at

    # Every user once, counters adding up, Graph's log with one write per user.
    results = stack.results(job_id)
    assert job["status"] == "completed", (job, Counter((r["status"], r["reason"]) for r in results))
    assert job["succeeded"] == job["total"] == len(rows) == len(results) and job["pending"] == 0, job
    assert Counter(r["user"] for r in results) == Counter(row["user"] for row in rows)
    check_graph_state(stack, before, expected, results)
    # The results lost with the old primary: users Graph had applied, read again and found done,
    # with the `before` state of the seed (their plans had reached the replica before the write).
    by_row = {r["row"]: r for r in results}
    lost_written = [by_row[row] for row in lost if by_row[row]["user"] in written_in_window]
    assert lost_written, f"no result of a written user was lost: the test showed nothing ({lost})"
    wrong = [r for r in lost_written if (r["status"], r["detail"]) != ("succeeded", ALREADY_DONE)
             or user_state(r["before"]) != seed[r["user"]] or r["attempts"] < 2]
    assert not wrong, wrong[:3]
    # Every write Graph applied was registered (its attempt counted) on a replica before it went out:
    # a batch sent without that would have left its count on the old primary only.
    with group.replica.client(socket_timeout=5) as new_primary:
        registered = {row_user[int(row)]: int(n) for row, n in new_primary.hgetall(f"bl:job:{job_id}:att").items()}
    with stack.control() as control:
        applied = Counter(w["user"] for w in control.get("/writes").json()["value"]
                          if isinstance(w["status"], int) and 200 <= w["status"] < 300)
    unregistered = {u: (n, registered.get(u, 0)) for u, n in applied.items() if n > registered.get(u, 0)}
    assert not unregistered, f"writes sent without a replica holding them (applied, registered): {unregistered}"
    # No user's `before` is anything but its seed state: a rollback of this job would undo all of it.
    drifted = [r["user"] for r in results if user_state(r["before"]) != seed[r["user"]]]
    assert not drifted, drifted[:5]
    with group.replica.client(socket_timeout=5) as new_primary:
        assert not new_primary.exists(f"bl:job:{job_id}:seats") and not new_primary.smembers("bl:seats:sim")
        assert new_primary.zcard("bl:due") == 0

    # Both passwords stayed out of every log, through the outage's errors included.
    logs = {path.name: path.read_bytes() for path in stack.workdir.glob("*.log")
            if path.name.startswith(("api", "worker"))}
    leaks = [f"{needle!r} in {name}" for secret in (PASSWORD, SENTINEL_PASSWORD) for needle in needles_for(secret)
             for name, text in logs.items() if needle in text]
    assert not leaks, leaks

    print(f"\n[failover] {USERS} users; {len(lost)} results lost with the primary ({len(lost_written)} of users "
          f"Graph had written); promoted {promoted_s:.1f}s after kill -9, job done {finished_s:.1f}s after it; "
          f"attempts {dict(sorted(Counter(r['attempts'] for r in results).items()))}; whole test "
          f"{time.monotonic() - started:.1f}s")
