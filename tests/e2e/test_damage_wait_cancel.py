"""Damage tests 4 and 5 of issue 5, on real processes: a long Retry-After, and a cancel mid-job.

4. A 429 with `Retry-After: 300` on a short job. The worker reads Graph's Retry-After through a
   scaled time base (`BULKLICENSE_TIME_SCALE=0.02`: 300 s reads as 6 s) and may wait inline for at
   most 2 s, so the chunk must be handed back to the broker with a countdown. The worker runs ONE
   slot: another job submitted during the wait can only finish first if that slot was freed. That
   job belongs to another tenant profile: a 429's Retry-After rightly pauses every caller of the
   throttled tenant (Graph's throttle scope is the app in the tenant), so a job of the same
   profile would wait too, slot or no slot.
5. Cancel in the middle of a paced 1,000-user job: once the cancel call has answered, graphsim's
   write log shows no further write for any user of the job; the rest end `cancelled`, and
   graphsim's directory agrees with every per-user result. 10 % of Graph requests fail with 503,
   so chunks also sit in retry back-offs between rounds (no write in flight) when the cancel lands:
   those must not send their retries afterwards either.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import POWER_BI_PRO, Stack, free_users, sim_profile, wait_for

# Each runs in about 8 s (stack start included); their own deadlines fail first, with logs.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TIME_SCALE = 0.02
RETRY_AFTER_S = 300.0
SCALED_WAIT_S = RETRY_AFTER_S * TIME_SCALE  # 6 s
TERMINAL = ("completed", "completed_with_errors", "cancelled", "failed")


def copy_of_sim_profile(name: str) -> Any:
    """A second tenant profile on the same simulated tenant (own throttle state, own jobs)."""

    def render(sim: dict[str, Any]) -> str:
        return sim_profile(name, sim)

    return render


def submit(stack: Stack, users: list[dict[str, Any]], tenant: str = "sim") -> str:
    body = "user,add\n" + "".join(f"{u['userPrincipalName']},POWER_BI_PRO\n" for u in users)
    with stack.api() as api:
        response = api.post("/v1/jobs", params={"tenant": tenant}, content=body.encode(),
                            headers={"Content-Type": "text/csv"})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def worker_log(stack: Stack) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(Path(stack.workdir).glob("worker*.log")))


# --- 4. Retry-After: 300 hands the chunk back and frees the worker slot ------------------------------

@pytest.fixture
def wait_stack(tmp_path: Path) -> Iterator[Stack]:
    env = {
        "BULKLICENSE_TIME_SCALE": str(TIME_SCALE),
        "BULKLICENSE_MAX_INLINE_WAIT_S": "2",
        "BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05",
    }
    s = Stack(tmp_path, sim_args=["--users", "120", "--seed", "5", "--latency-ms", "5"], env=env,
              extra_profiles=copy_of_sim_profile("sim2"))
    try:
        s.start(workers=0)
        s.start_worker(concurrency=1)  # one slot: a chunk sleeping through the wait would block everything
        yield s
    finally:
        s.stop()


def test_retry_after_300_hands_the_chunk_back_and_the_worker_serves_another_job(wait_stack: Stack) -> None:
    stack = wait_stack
    users = free_users(stack, 8)
    job_a_users, job_b_users = users[:4], users[4:]
    throttled = job_a_users[1]
    with stack.control() as control:
        control.post("/reset")
        r = control.post("/config", json={"force_429": {"count": 1, "retry_after_s": RETRY_AFTER_S,
                                                        "user": throttled["userPrincipalName"]}})
        assert r.status_code == 200, r.text

    job_a = submit(stack, job_a_users, "sim")
    # The chunk's one $batch met the 429 for one user; the three others are recorded at once.
    with stack.api() as api:
        wait_for(lambda: api.get(f"/v1/jobs/{job_a}").json()["pending"] == 1, 30, "job A's first round", stack)
    throttled_seen_at = time.time()

    # Another tenant's job, submitted while job A waits out its Retry-After: it runs in the one slot.
    job_b = submit(stack, job_b_users, "sim2")
    b = stack.wait_job(job_b, timeout_s=30)
    b_done_at = time.time()
    with stack.api() as api:
        a_when_b_done = api.get(f"/v1/jobs/{job_a}").json()
    a = stack.wait_job(job_a, timeout_s=60)
    with stack.api() as api:
        results = {r["user"]: r for r in api.get(f"/v1/jobs/{job_a}/results").json()["value"]}
    with stack.control() as control:
        writes = control.get("/writes").json()["value"]
        final = {u["userPrincipalName"]: u for u in control.get("/users").json()["value"]}

    assert b["status"] == "completed" and b["succeeded"] == len(job_b_users), b
    assert a_when_b_done["pending"] == 1, f"job A finished before job B: {a_when_b_done}"
    assert a["status"] == "completed" and a["succeeded"] == len(job_a_users), a
    assert a["throttled"] >= 1, a
    mine = results[throttled["userPrincipalName"]]
    assert mine["status"] == "succeeded" and mine["attempts"] >= 2, mine
    assert all(POWER_BI_PRO in {x["skuId"] for x in final[u["userPrincipalName"]]["assignedLicenses"]}
               for u in users)

    # graphsim's write log: the 429, then B's writes, then (after the scaled wait) the retry.
    upn = throttled["userPrincipalName"]
    attempts = [w for w in writes if w["user"] == upn]
    assert [w["status"] for w in attempts] == [429, 200], attempts
    waited_s = attempts[1]["ts"] - attempts[0]["ts"]
    assert waited_s >= SCALED_WAIT_S * 0.95, f"Retry-After not honoured: retried after {waited_s:.2f}s"
    b_upns = {u["userPrincipalName"] for u in job_b_users}
    b_writes = [w["ts"] for w in writes if w["user"] in b_upns]
    assert len(b_writes) == len(job_b_users)
    assert attempts[0]["ts"] < min(b_writes) and max(b_writes) < attempts[1]["ts"]
    assert b_done_at < throttled_seen_at + SCALED_WAIT_S
    log = worker_log(stack)
    assert f"of job {job_a} handed back for" in log
    print(f"\n[wait] 429 at +0, job B ({len(job_b_users)} users) written at "
          f"+{min(b_writes) - attempts[0]['ts']:.2f}..+{max(b_writes) - attempts[0]['ts']:.2f}s, "
          f"throttled user retried at +{waited_s:.2f}s (scaled Retry-After {SCALED_WAIT_S:.1f}s); "
          f"job A throttled={a['throttled']} attempts={mine['attempts']}")


# --- 5. Cancel mid-job: no write after the acknowledgement ---------------------------------------------

CANCEL_USERS = 1000
WRITES_PER_S = 50


@pytest.fixture
def cancel_stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, sim_args=["--users", "1200", "--seed", "4", "--write-limit", f"{WRITES_PER_S}/1",
                                  "--tenant-write-limit", "none", "--latency-ms", "20",
                                  "--latency-jitter-ms", "10", "--fault-503", "0.1", "--fault-seed", "7"],
              env={"BULKLICENSE_CHUNK_SIZE": "50", "BULKLICENSE_CHUNK_WINDOW": "4"})
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


def test_cancel_mid_job_sends_no_write_after_the_acknowledgement(cancel_stack: Stack) -> None:
    stack = cancel_stack
    users = free_users(stack, CANCEL_USERS)
    ids = {u["id"] for u in users}
    with stack.control() as control:
        control.post("/reset")
    job_id = submit(stack, users)

    with stack.api() as api:
        # Let it run for a while at the paced rate (~50 writes/s), then cancel.
        deadline = time.monotonic() + 60
        while True:
            job = api.get(f"/v1/jobs/{job_id}").json()
            if job["succeeded"] >= 150:
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        cancel_sent_at = time.time()
        response = api.post(f"/v1/jobs/{job_id}/cancel")
        cancel_acked_at = time.time()
    assert response.status_code == 202, response.text
    ack = response.json()

    job = stack.wait_job(job_id, timeout_s=60)
    with stack.api() as api:
        results = api.get(f"/v1/jobs/{job_id}/results").json()["value"]
    with stack.control() as control:
        writes = [w for w in control.get("/writes").json()["value"] if w["user_id"] in ids]
        final = {u["userPrincipalName"]: u for u in control.get("/users").json()["value"]}

    # graphsim stamps each write with time.time() on this same machine when it runs it (after its
    # simulated latency), so a write that arrived after the acknowledgement has ts > cancel_acked_at.
    late = [w for w in writes if w["ts"] > cancel_acked_at]
    assert late == [], f"{len(late)} writes reached graphsim after the cancel was acknowledged: {late[:5]}"
    drained = [w for w in writes if cancel_sent_at <= w["ts"] <= cancel_acked_at]
    assert ack["cancel_requested"] is True and ack["writes_in_flight"] == 0, ack

    statuses = Counter(r["status"] for r in results)
    assert job["status"] == "cancelled", job
    assert job["pending"] == 0 and statuses["pending"] == 0
    assert job["succeeded"] + job["failed"] + job["cancelled"] == job["total"] == CANCEL_USERS
    assert (statuses["succeeded"], statuses["failed"], statuses["cancelled"]) == (
        job["succeeded"], job["failed"], job["cancelled"])
    assert job["cancelled"] >= CANCEL_USERS // 2, job
    for r in results:
        held = POWER_BI_PRO in {a["skuId"] for a in final[r["user"]]["assignedLicenses"]}
        if r["status"] == "succeeded":
            assert held, r
        elif r["status"] == "cancelled":
            assert not held, r
    print(f"\n[cancel] {len(writes)} writes in all; {len(drained)} drained between cancel sent and "
          f"acknowledged ({cancel_acked_at - cancel_sent_at:.3f}s); 0 after; last write "
          f"{max(w['ts'] for w in writes) - cancel_acked_at:+.3f}s from the ack; final {dict(statuses)}")
