"""Approval end to end on real processes: a job of a tenant that requires approval writes nothing until
another key approves it, then its run writes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import API_KEY, OTHER_KEY, SIM_KEY, Stack, sim_profile

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("approval")
    env = {"BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05", "BULKLICENSE_CHUNK_SIZE": "2",
           "BULKLICENSE_API_KEYS": f"{API_KEY}:*,{SIM_KEY}:sim|gated,{OTHER_KEY}:other"}
    s = Stack(workdir, sim_args=["--users", "50", "--seed", "3", "--latency-ms", "5"], env=env,
              extra_profiles=lambda sim: sim_profile("gated", sim) + "require_approval = true\n")
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


def test_a_job_needing_approval_writes_nothing_until_another_key_approves(stack: Stack) -> None:
    with stack.control() as control:
        users = [u["userPrincipalName"] for u in control.get("/users").json()["value"]
                 if not u["assignedLicenses"] and u.get("usageLocation")][:3]
    body = "user,add\n" + "".join(f"{u},EMS\n" for u in users)
    with stack.api(SIM_KEY) as submitter:
        accepted = submitter.post("/v1/jobs", params={"tenant": "gated"}, content=body.encode(),
                                  headers={"Content-Type": "text/csv"}).json()
        assert accepted["needs_approval"] is True, accepted
        job_id = accepted["id"]

        waiting = stack.wait_until(job_id, lambda job: job["awaiting_approval"])
        assert (waiting["status"], waiting["would_change"]) == ("planned", 3)
        with stack.control() as control:  # every user read and planned, none written
            assert control.get("/writes").json()["count"] == 0
        assert submitter.post(f"/v1/jobs/{job_id}/approve").status_code == 403

    with stack.api(API_KEY) as approver:
        approved = approver.post(f"/v1/jobs/{job_id}/approve")
    assert approved.status_code == 202, approved.text
    run = stack.wait_job(approved.json()["id"])
    assert (run["status"], run["succeeded"], run["planned_from"]) == ("completed", 3, job_id)
    with stack.control() as control:
        writes = control.get("/writes").json()["value"]
    assert sorted(w["user"] for w in writes) == sorted(users)
