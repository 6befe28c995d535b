"""Three worker processes on one throttled tenant: under the ceiling, nothing lost, progress monotonic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.stack import Stack

# Runs in about 25 s (stack start included); the job's own deadline fails first, with logs.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
CAPACITY, PERIOD_S = 100, 1.0  # graphsim's write bucket: 100 writes, refilled at 100/s
USERS = 2000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("throughput"),
              sim_args=["--users", str(USERS + 500), "--seed", "3", "--write-limit", f"{CAPACITY}/{PERIOD_S:g}",
                        "--tenant-write-limit", "none", "--latency-ms", "30", "--latency-jitter-ms", "15"],
              env={"BULKLICENSE_CHUNK_SIZE": "50", "BULKLICENSE_CHUNK_WINDOW": "3"})
    try:
        yield s.start(workers=3)
    finally:
        s.stop()


def test_three_workers_share_one_ceiling_and_every_user_succeeds(stack: Stack) -> None:
    with stack.control() as control:
        users = [u for u in control.get("/users").json()["value"] if u.get("usageLocation")
                 and not any(a["skuId"].startswith("f8a1db68") for a in u["assignedLicenses"])][:USERS]
        control.post("/reset")
    assert len(users) == USERS
    body = "user,add,employeeId\n" + "".join(
        f"{u['userPrincipalName']},POWER_BI_PRO,E{i}\n" for i, u in enumerate(users))
    seen: list[dict[str, Any]] = []
    with stack.api() as api:
        response = api.post("/v1/jobs", params={"tenant": "sim"}, content=body.encode(),
                            headers={"Content-Type": "text/csv"})
        assert response.status_code == 202, response.text
        job = stack.wait_job(response.json()["id"], timeout_s=120, on_poll=seen.append)
    with stack.control() as control:
        stats = control.get("/stats").json()
        final = control.get("/users").json()["value"]

    assert job["status"] == "completed", job
    assert job["succeeded"] == USERS
    done = [j["succeeded"] + j["failed"] + j["cancelled"] for j in seen]
    assert done == sorted(done), "progress went backwards"
    assert len(set(done)) > 5, "progress was not observed moving"
    assert any(j["status"] == "running" and j["eta_s"] for j in seen)

    # Graph's bucket was never overrun for long: no 1-second window above burst + refill, and
    # after the initial burst the sustained rate stays at the ceiling.
    per_second = stats["writes_per_s"]
    assert max(per_second) <= CAPACITY + CAPACITY / PERIOD_S
    steady = per_second[2:-1]
    assert steady and max(steady) <= CAPACITY / PERIOD_S * 1.1
    # The shared throttle keeps us under the limit: 429s are rare, and every one was honoured.
    assert stats["throttled_responses"] <= 0.03 * stats["writes_accepted"], stats
    assert job["throttled"] == stats["throttled_responses"]
    licensed = {u["userPrincipalName"] for u in final if any(a["skuId"].startswith("f8a1db68")
                                                             for a in u["assignedLicenses"])}
    assert {u["userPrincipalName"] for u in users} <= licensed
