"""New hires and just-set locations, end to end: the directory's eventual consistency on real processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.stack import Stack

GRACE_S = 30.0
VISIBLE_AFTER_S = 20.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(200)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("replication")
    env = {"BULKLICENSE_NOT_FOUND_GRACE_S": str(GRACE_S), "BULKLICENSE_CHUNK_SIZE": "8",
           "BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05"}
    s = Stack(workdir, sim_args=["--users", "200", "--seed", "4", "--latency-ms", "5"], env=env)
    try:
        s.start(workers=0)
        s.start_worker(concurrency=1)  # one slot: a waiting chunk must not hold it
        yield s
    finally:
        s.stop()


def free_users(stack: Stack, count: int) -> list[str]:
    with stack.control() as control:
        users: list[dict[str, Any]] = control.get("/users").json()["value"]
    return [u["userPrincipalName"] for u in users if not u["assignedLicenses"] and u.get("usageLocation")][:count]


def test_new_hires_succeed_once_replicated_and_typos_fail_after_the_grace(stack: Stack) -> None:
    hires = [f"new.hire{i:02d}@contoso.example" for i in range(30)]
    with stack.control() as control:
        control.post("/reset")
        for upn in hires:
            created = control.post("/users", json={"userPrincipalName": upn, "usageLocation": "US",
                                                   "visible_after_s": VISIBLE_AFTER_S})
            assert created.status_code == 201, created.text
    time.sleep(1.0)  # HR's provisioning ran a moment before the license batch, as in real onboarding
    typos = ["new.hier01@contoso.example", "nwe.hire02@contoso.example"]
    submitted = time.monotonic()
    job = stack.submit_csv([{"user": u, "add": "POWER_BI_PRO"} for u in hires + typos])

    # While the 32 wait for the directory, another job runs through the only worker slot.
    waiting = stack.wait_until(job["id"], lambda j: j["waiting_for_replication"] == 32, timeout_s=20)
    assert waiting["status"] == "planning" and waiting["failed"] == 0
    other = stack.submit_csv([{"user": u, "add": "EMS"} for u in free_users(stack, 5)])
    quick = stack.wait_job(other["id"], timeout_s=20)
    assert quick["succeeded"] == 5
    assert time.monotonic() - submitted < VISIBLE_AFTER_S  # it did not wait behind the new hires

    done = stack.wait_job(job["id"], timeout_s=GRACE_S + 60)
    results = {r["user"]: r for r in stack.results(job["id"])}
    assert [results[u]["status"] for u in hires] == ["succeeded"] * 30
    for typo in typos:
        assert (results[typo]["status"], results[typo]["reason"]) == ("failed", "user_not_found")
        assert results[typo]["detail"].startswith("given up after 3")  # after the grace, with the times
    assert time.monotonic() - submitted >= GRACE_S
    assert (done["succeeded"], done["failed"], done["waiting_for_replication"]) == (30, 2, 0)
    with stack.control() as control:  # each new hire was written once, when it could be seen
        writes = control.get("/writes").json()["value"]
    assert sorted(w["user"] for w in writes if w["user"] in hires) == sorted(hires)


def test_a_license_right_after_setting_the_location_waits_for_replication(stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
        control.post("/config", json={"replication_lag_s": 5})
        users: list[dict[str, Any]] = control.get("/users").json()["value"]
    try:
        moving = [u["userPrincipalName"] for u in users if not u["assignedLicenses"] and not u.get("usageLocation")]
        rows = [{"user": u, "add": "EMS", "usage_location": "NL"} for u in moving[:6]]
        assert len(rows) == 6
        job = stack.wait_job(stack.submit_csv(rows)["id"], timeout_s=90)
    finally:
        with stack.control() as control:
            control.post("/config", json={"replication_lag_s": 0})
    assert (job["succeeded"], job["failed"]) == (6, 0), stack.results(job["id"])
