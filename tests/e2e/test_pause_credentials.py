"""Pause, don't fail (issue 10), on real processes: a refused credential and an app without permission.

Redis, graphsim over TLS, the API and a Celery worker, as deployed. Each job pauses instead of
failing its users, waits for a person (no automatic resume), and after the tenant profile is fixed
(the file is edited; nothing is restarted) and the job resumed, every user is written exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import API_KEY, Stack, sim_profile
from worker.runtime import RESUME_CHECK_INTERVAL_S

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WRONG_SECRET = "Wq8Q~Zr1xVn3bLd5fTg7hJk9mP2sC4eA6uY0iO.-"  # of Entra's shape, registered nowhere


def profile(name: str, sim: dict[str, Any], client_id: str, secret: str) -> str:
    return sim_profile(name, sim, client_id=client_id, secret=secret)


def good(sim: dict[str, Any]) -> str:
    """`rotating`: the write-capable app; `readonly`: an app that may read users and SKUs, not write."""
    return (profile("rotating", sim, sim["client_id"], sim["client_secret"]) + "\n"
            + profile("readonly", sim, sim["readonly_client_id"], sim["readonly_client_secret"]))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Slow enough Graph (300 ms a request) that a 150-user job is still running when its profile breaks.
    s = Stack(tmp_path_factory.mktemp("pause-credentials"),
              sim_args=["--users", "300", "--seed", "3", "--latency-ms", "300"],
              env={"BULKLICENSE_CHUNK_SIZE": "10"}, extra_profiles=good)
    try:
        s.start(workers=0)
        s.start_worker(concurrency=2)
        yield s
    finally:
        s.stop()


def tenants_file(stack: Stack) -> Path:
    return stack.workdir / "all-tenants.toml"


def edit_profile(path: Path, name: str, old: str, new: str) -> None:
    """Edit one profile of the profiles file in place, as an admin does (no process is restarted)."""
    head, sep, rest = path.read_text().partition(f"[tenants.{name}]\n")
    section, nxt, tail = rest.partition("\n[")
    assert sep and section.count(old) == 1, (name, old)
    path.write_text(head + sep + section.replace(old, new) + nxt + tail)


def free_users(stack: Stack, count: int) -> list[str]:
    with stack.control() as control:
        control.post("/reset")
        users = control.get("/users").json()["value"]
    free = [u["userPrincipalName"] for u in users if u.get("usageLocation") and not u["assignedLicenses"]]
    assert len(free) >= count
    return free[:count]


def poll(stack: Stack, job_id: str, until: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with stack.api() as api:
        while True:
            job: dict[str, Any] = api.get(f"/v1/jobs/{job_id}").json()
            if until(job):
                return job
            assert time.monotonic() < deadline, f"timed out: {job}\n{stack.worker_logs()[-3000:]}"
            time.sleep(0.05)


def cli(stack: Stack, *args: str) -> str:
    env = {**stack.env, "BULKLICENSE_API_URL": stack.api_url, "BULKLICENSE_API_KEY": API_KEY, "COLUMNS": "400"}
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=os.getcwd())
    assert done.returncode == 0, done.stderr
    return done.stdout


def assert_written_once(stack: Stack, users: list[str], results: list[dict[str, Any]]) -> dict[str, int]:
    """Every user succeeded, with exactly one applied assignLicense in graphsim's write log."""
    assert {(r["status"], r["reason"]) for r in results} == {("succeeded", None)}, results[:3]
    with stack.control() as control:
        writes = control.get("/writes").json()["value"]
    applied: dict[str, int] = {}
    refused: dict[str, int] = {}
    for entry in writes:
        bucket = applied if isinstance(entry["status"], int) and 200 <= entry["status"] < 300 else refused
        bucket[entry["user"]] = bucket.get(entry["user"], 0) + 1
    assert {u: applied.get(u, 0) for u in users} == dict.fromkeys(users, 1)
    assert set(applied) == set(users)
    return refused


def test_a_refused_credential_pauses_the_job_until_the_profile_is_fixed_and_it_is_resumed(stack: Stack) -> None:
    users = free_users(stack, 150)
    path = tenants_file(stack)
    secret = stack.sim["client_secret"]
    accepted = stack.submit_csv([{"user": u, "add": "FLOW_FREE"} for u in users], tenant="rotating")
    job_id = accepted["id"]
    poll(stack, job_id, lambda j: j["succeeded"] >= 10, 60)

    # The app's secret is rotated in the profile by mistake: the identity platform refuses the new one.
    edit_profile(path, "rotating", f'client_secret = "{secret}"', f'client_secret = "{WRONG_SECRET}"')
    broken_at = time.monotonic()
    job = poll(stack, job_id, lambda j: j["status"] == "paused", 30)
    paused_after_s = time.monotonic() - broken_at
    assert job["paused_reason"] == "auth_failed", job
    assert "AADSTS7000215" in job["paused_message"] and WRONG_SECRET not in job["paused_message"]
    assert job["next_probe_at"] is None and job["eta_s"] is None and job["rate_per_s"] == 0
    assert job["failed"] == 0 and job["pending"] > 0, job

    # Nothing resumes it by itself: it waits, and says so. A deliberate negative window (what is shown
    # is that nothing happens): the resumer looks at paused jobs every RESUME_CHECK_INTERVAL_S, and
    # three of its passes go by.
    time.sleep(3 * RESUME_CHECK_INTERVAL_S)
    still = poll(stack, job_id, lambda j: True, 5)
    assert still["status"] == "paused" and still["succeeded"] == job["succeeded"], still
    shown = cli(stack, "status", job_id)
    assert "paused: auth_failed — token request for tenant profile 'rotating' failed: invalid_client: " \
           "AADSTS7000215" in shown, shown
    assert f"fix the cause, then: bulklicense resume {job_id}" in shown

    # The admin fixes the file (no restart) and resumes the job from the command line.
    edit_profile(path, "rotating", f'client_secret = "{WRONG_SECRET}"', f'client_secret = "{secret}"')
    resumed_out = cli(stack, "resume", job_id)
    assert '"resumed": true' in resumed_out, resumed_out
    final = stack.wait_job(job_id, timeout_s=90)
    assert final["status"] == "completed" and final["succeeded"] == len(users), final
    results = stack.results(job_id)
    refused = assert_written_once(stack, users, results)
    assert refused == {}  # a refused token sends nothing to Graph
    assert {r["attempts"] for r in results} == {2}  # one read, one write each: nothing was charged
    log = stack.worker_logs()
    assert "tenant profile rotating changed: new Graph client and credentials" in log
    assert WRONG_SECRET not in log
    print(f"\n[pause auth] paused {paused_after_s:.2f}s after the profile broke, with {job['succeeded']}/"
          f"{len(users)} users done; all {len(users)} written once after the fix and resume")


def test_an_app_without_write_permission_pauses_as_forbidden_then_finishes_once_granted(stack: Stack) -> None:
    users = free_users(stack, 40)
    path = tenants_file(stack)
    sim = stack.sim
    accepted = stack.submit_csv([{"user": u, "add": "FLOW_FREE"} for u in users], tenant="readonly")
    job_id = accepted["id"]
    job = poll(stack, job_id, lambda j: j["status"] == "paused", 60)
    assert job["paused_reason"] == "forbidden", job
    assert job["paused_message"].startswith("the app may not assign licenses (")
    assert "403 Authorization_RequestDenied: Insufficient privileges to complete the operation." in (
        job["paused_message"])
    assert job["next_probe_at"] is None and job["failed"] == 0 and job["succeeded"] == 0, job
    time.sleep(3 * RESUME_CHECK_INTERVAL_S)  # a deliberate negative window, as above: no resumer pass resumes it
    assert poll(stack, job_id, lambda j: True, 5)["status"] == "paused"

    # The permission is granted (here: the profile is pointed at an app that has it), then resumed.
    edit_profile(path, "readonly",
                 f'client_id = "{sim["readonly_client_id"]}"\nclient_secret = "{sim["readonly_client_secret"]}"',
                 f'client_id = "{sim["client_id"]}"\nclient_secret = "{sim["client_secret"]}"')
    with stack.api() as api:
        resumed = api.post(f"/v1/jobs/{job_id}/resume")
        assert resumed.status_code == 202 and resumed.json()["resumed"] is True, resumed.text
        again = api.post(f"/v1/jobs/{job_id}/resume")
        assert again.status_code == 409  # not paused any more
    final = stack.wait_job(job_id, timeout_s=60)
    assert final["status"] == "completed" and final["succeeded"] == len(users), final
    results = stack.results(job_id)
    refused = assert_written_once(stack, users, results)
    # The refused writes: at most one per user (the job paused at the first denied round of each chunk).
    assert refused and set(refused.values()) == {1} and set(refused) <= set(users), refused
    assert {r["attempts"] for r in results} == {2}
    print(f"\n[pause forbidden] {len(refused)} writes refused with 403 before the pause; "
          f"all {len(users)} written once after the grant and resume")
