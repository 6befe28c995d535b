"""Graph unreachable for 28 s mid-job, on real processes and in real time.

Two simulated tenants, each its own graphsim over TLS, one Redis, the API and one worker process
with 8 threads. Tenant `sim` gets a 28 s outage (every Graph and identity request answered by
closing the connection) while its 500-user job runs; tenant `sim2`'s job runs at the same time.
The `sim` job must pause within seconds without spending any user's attempts, resume by itself when
Graph answers again, and write every user exactly once; the `sim2` job must carry on meanwhile.
Nothing is scaled: the outage, the breaker's probes and the retry backoffs are real seconds.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.localstack import Services, start_simulator
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

OUTAGE_S = 28  # ends about 2 s before the breaker's probe at 2+4+8+16 = 30 s after it opens: a prompt resume
USERS_A = 500
USERS_B = 200


@pytest.fixture
def sim2(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A second simulated tenant, slower (1 s a request) so its job is still running during the outage."""
    workdir = tmp_path / "sim2"
    workdir.mkdir()
    services = Services(workdir)
    try:
        yield start_simulator(services, {}, ["--users", "400", "--seed", "12", "--latency-ms", "1000",
                                             "--profile-name", "sim2"])
    finally:
        services.stop()


@pytest.fixture
def stack(tmp_path: Path, sim2: dict[str, Any]) -> Iterator[Stack]:
    s = Stack(tmp_path, sim_args=["--users", "1000", "--seed", "11", "--latency-ms", "300"],
              env={"BULKLICENSE_CHUNK_SIZE": "20"},
              extra_profiles=lambda sim: Path(sim2["profile_path"]).read_text())
    try:
        s.start(workers=0)
        s.start_worker(concurrency=8)
        yield s
    finally:
        s.stop()


def free_users(control: httpx.Client, count: int) -> list[str]:
    control.post("/reset")
    users = control.get("/users").json()["value"]
    free = [u["userPrincipalName"] for u in users if u.get("usageLocation") and not u["assignedLicenses"]]
    assert len(free) >= count
    return free[:count]


def writes_by_user(control: httpx.Client) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Applied writes per user, and every entry of graphsim's write log."""
    writes: list[dict[str, Any]] = control.get("/writes").json()["value"]
    applied: dict[str, int] = {}
    for entry in writes:
        if isinstance(entry["status"], int) and 200 <= entry["status"] < 300:
            applied[entry["user"]] = applied.get(entry["user"], 0) + 1
    return applied, writes


def test_graph_unreachable_for_28_s_pauses_the_job_and_it_resumes_by_itself(
        stack: Stack, sim2: dict[str, Any]) -> None:
    ca2 = ssl.create_default_context(cafile=sim2["ca_path"])
    control2 = httpx.Client(base_url=sim2["control_url"], verify=ca2, timeout=30)
    with stack.control() as control, stack.api() as api, control2:
        users_a = free_users(control, USERS_A)
        users_b = free_users(control2, USERS_B)
        job_a = stack.submit_csv([{"user": u, "add": "FLOW_FREE"} for u in users_a], tenant="sim")["id"]
        job_b = stack.submit_csv([{"user": u, "add": "FLOW_FREE"} for u in users_b], tenant="sim2")["id"]

        def get(job_id: str) -> dict[str, Any]:
            job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
            return job

        def wait(what: str, job_id: str, predicate: Any, timeout_s: float) -> tuple[dict[str, Any], float]:
            deadline = time.monotonic() + timeout_s
            while True:
                job = get(job_id)
                if predicate(job):
                    return job, time.monotonic()
                assert time.monotonic() < deadline, f"{what}: {job}\n{stack.worker_logs()[-4000:]}"
                time.sleep(0.05)

        wait("job A under way", job_a, lambda j: j["succeeded"] >= 50, 60)
        assert control.post("/config", json={"outage_s": OUTAGE_S}).status_code == 200
        outage_start = time.monotonic()
        outage_end = outage_start + OUTAGE_S

        paused, paused_at = wait("job A paused", job_a, lambda j: j["status"] == "paused", 30)
        assert paused["paused_reason"] == "graph_unavailable", paused
        assert paused["paused_message"].startswith("Graph does not answer for tenant profile 'sim'"), paused
        assert paused["next_probe_at"] is not None and paused["eta_s"] is None and paused["rate_per_s"] == 0
        assert paused["failed"] == 0 and paused["pending"] > 0, paused
        done_at_pause = paused["succeeded"]

        # Meanwhile the other tenant's job runs to its end.
        b, b_done_at = wait("job B done", job_b, lambda j: j["status"] in ("completed", "completed_with_errors"),
                            OUTAGE_S - 6)
        assert b["status"] == "completed" and b["succeeded"] == USERS_B, b
        applied_b, writes_b = writes_by_user(control2)
        assert applied_b == dict.fromkeys(users_b, 1) and len(writes_b) == USERS_B
        # Job A stays paused and nothing of it moves. (Calls Graph had received just before the outage
        # began were still answered and recorded; all of them are long over by now.)
        frozen = get(job_a)
        while time.monotonic() < outage_end - 2:
            job = get(job_a)
            assert job["status"] == "paused" and job["failed"] == 0, job
            assert (job["succeeded"], job["pending"]) == (frozen["succeeded"], frozen["pending"]), job
            time.sleep(1.0)

        resumed, resumed_at = wait("job A resumed", job_a, lambda j: j["status"] != "paused", 60)
        assert resumed["status"] in ("running", "completed"), resumed
        final = stack.wait_job(job_a, timeout_s=60)
        assert final["status"] == "completed" and final["succeeded"] == USERS_A and final["failed"] == 0, final

        results = stack.results(job_a)
        # No user's attempts were spent on the outage: one read and one write each, as without it.
        assert {(r["status"], r["reason"], r["attempts"]) for r in results} == {("succeeded", None, 2)}
        applied_a, writes_a = writes_by_user(control)
        assert applied_a == dict.fromkeys(users_a, 1)
        lost = [w for w in writes_a if w["status"] == "dropped"]  # sent just as the outage began
        stats = control.get("/stats").json()
    dropped = sum(v.get("dropped", 0) for v in stats["by_endpoint"].values())
    # The breaker stopped the calls: those in flight when Graph went away, the five that opened it,
    # and one probe per interval (2, 4, 8, 16, 30, 30, 30 s).
    assert dropped <= 30, stats["by_endpoint"]
    # The probe that closed it may have been the API's (a progress read of the SKU catalog) or the worker's.
    log = stack.worker_logs() + (stack.workdir / "api.log").read_text(errors="replace")
    assert log.count("tenant sim: circuit breaker OPEN") == 1 and "tenant sim: Graph answers again" in log
    assert "tenant sim2: circuit breaker" not in log
    print(f"\n[outage] pause delay {paused_at - outage_start:.2f}s (outage start -> paused, {done_at_pause}/"
          f"{USERS_A} done); resume delay {resumed_at - outage_end:.2f}s (outage end -> {resumed['status']}); "
          f"job B ({USERS_B} users, other tenant) finished {b_done_at - outage_start:.1f}s into the outage; "
          f"requests dropped by the outage {dropped} (writes lost in flight {len(lost)}); "
          f"job A retries {final['retries']}")
