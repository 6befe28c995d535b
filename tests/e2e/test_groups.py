"""Group-based licensing end to end on real processes: licenses inherited from a group are never written at."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.stack import POWER_BI_PRO, Stack, free_users

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MEMBERS = 50
CHUNK_SIZE = 20


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("groups")
    env = {"BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05", "BULKLICENSE_CHUNK_SIZE": str(CHUNK_SIZE)}
    s = Stack(workdir, sim_args=["--users", "120", "--seed", "5", "--latency-ms", "5"], env=env)
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


def test_removing_a_license_held_through_a_group_is_predicted_to_fail_and_never_written(stack: Stack) -> None:
    members = [u["userPrincipalName"] for u in free_users(stack, MEMBERS)]
    with stack.control() as control:
        control.post("/reset")
        assert control.patch(f"/skus/{POWER_BI_PRO}", json={"enabled": 10_000}).status_code == 200
        created = control.post("/groups", json={"displayName": "Analysts (Power BI)", "members": members,
                                                "licenses": [{"sku": POWER_BI_PRO}]})
        assert created.status_code == 201, created.text
        group_id = created.json()["id"]
        held = control.get("/licenses").json()["value"]
    via_group = {u["userPrincipalName"].lower() for u in held
                 if any(lic["skuId"] == POWER_BI_PRO and lic["groups"] == [group_id] and not lic["direct"]
                        for lic in u["licenses"])}
    assert via_group == {m.lower() for m in members}

    with stack.control() as control:
        reads_before = control.get("/stats").json()["reads_by_endpoint"]
    mark = time.time()
    accepted = stack.submit_csv([{"user": m, "remove": "POWER_BI_PRO"} for m in members])
    job = stack.wait_job(accepted["id"])
    results = stack.results(accepted["id"])

    assert (job["status"], job["failed"], job["succeeded"]) == ("completed_with_errors", MEMBERS, 0)
    assert job["plan"]["predicted_failures"] == {"inherited_from_group": MEMBERS}
    assert job["plan"]["seats"] == []  # nothing is released: the group keeps every seat
    assert {r["reason"] for r in results} == {"inherited_from_group"}
    assert {r["detail"] for r in results} == {"known from the user's state; nothing was sent"}
    assert all(r["groups"] == [{"sku_id": POWER_BI_PRO, "sku": "POWER_BI_PRO", "group_id": group_id,
                                "group_name": "Analysts (Power BI)"}] for r in results)
    with stack.control() as control:
        assert control.get("/writes", params={"since": mark}).json()["value"] == []
        assert control.get("/licenses").json()["value"] == held
        reads_after = control.get("/stats").json()["reads_by_endpoint"]
    # The group's name is asked of Graph once per chunk at most (chunks side by side may each ask before
    # the first kept it for the tenant), not once per user.
    assert 1 <= reads_after.get("groups.get", 0) - reads_before.get("groups.get", 0) <= -(-MEMBERS // CHUNK_SIZE)
