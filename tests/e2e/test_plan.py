"""Plan before write, end to end on real processes: dry runs, reruns that write nothing, the last seats."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.stack import Stack

EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
STANDARDPACK = "18181a46-0d4e-45cd-891e-60aabd171b4e"
VISIO = "c5928f49-12ba-48f7-ada3-0d743a3601d5"

# A dry run of this many users or more reads the tenant page by page (lowered from 1,000 so the
# 9-row dry run below pages, and the 10-row jobs do not).
PAGED_FROM = 9

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("plan")
    env = {"BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05", "BULKLICENSE_CHUNK_SIZE": "5",
           "BULKLICENSE_SEAT_RECHECK_INTERVAL_S": "1", "BULKLICENSE_REAPER_INTERVAL_S": "0.5",
           "BULKLICENSE_SKU_CACHE_TTL_S": "0", "BULKLICENSE_PAGED_READ_MIN_USERS": str(PAGED_FROM)}
    s = Stack(workdir, sim_args=["--users", "300", "--seed", "3", "--latency-ms", "5"], env=env)
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


def held(user: dict[str, Any]) -> set[str]:
    return {a["skuId"] for a in user["assignedLicenses"]}


def sim_users(stack: Stack) -> list[dict[str, Any]]:
    with stack.control() as control:
        users: list[dict[str, Any]] = control.get("/users").json()["value"]
    return users


def writes_since(stack: Stack, since: float) -> list[dict[str, Any]]:
    with stack.control() as control:
        value: list[dict[str, Any]] = control.get("/writes", params={"since": since}).json()["value"]
    return value


def mixed_rows(users: list[dict[str, Any]]) -> tuple[list[dict[str, str]], dict[str, tuple[str, str | None]]]:
    """One row of each plan outcome, with what a dry run must say of it."""
    free = iter(u for u in users if not u["assignedLicenses"] and u.get("usageLocation"))
    no_location = iter(u for u in users if not u["assignedLicenses"] and not u.get("usageLocation"))
    ems_only = iter(u for u in users if held(u) == {EMS} and u.get("usageLocation"))
    standard = iter(u for u in users if held(u) == {STANDARDPACK} and u.get("usageLocation"))
    rows: list[dict[str, str]] = []
    expect: dict[str, tuple[str, str | None]] = {}

    def row(user: str, outcome: tuple[str, str | None], add: str = "", remove: str = "", location: str = "") -> None:
        rows.append({"user": user, "add": add, "remove": remove, "usage_location": location})
        expect[user] = outcome

    row(next(free)["userPrincipalName"], ("would_change", None), add="ENTERPRISEPACK")
    row(next(free)["userPrincipalName"], ("would_change", None), location="NL")
    row(next(standard)["userPrincipalName"], ("would_change", None), add="ENTERPRISEPACK", remove="STANDARDPACK")
    row(next(standard)["userPrincipalName"], ("would_change", None), add="ENTERPRISEPACK")  # conflicts in Graph
    row(next(ems_only)["userPrincipalName"], ("unchanged", None), add="EMS")
    row(next(no_location)["userPrincipalName"], ("would_change", None), add="EMS", location="FR")
    row(next(no_location)["userPrincipalName"], ("would_fail", "usage_location_missing"), add="EMS")
    row(next(free)["userPrincipalName"], ("would_fail", "license_not_assigned"), remove="EMS")
    row("never.hired@contoso.example", ("would_fail", "user_not_found"), add="EMS")
    return rows, expect


def test_a_dry_run_writes_nothing_then_runs_and_a_rerun_writes_nothing(stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
    rows, expect = mixed_rows(sim_users(stack))
    assert len(rows) >= PAGED_FROM
    mark = time.time()
    with stack.control() as control:
        reads_before = control.get("/stats").json()["reads_by_endpoint"]
    with stack.api() as api:
        body = "user,add,remove,usage_location\n" + "".join(
            f"{r['user']},{r['add']},{r['remove']},{r['usage_location']}\n" for r in rows)
        response = api.post("/v1/jobs", params={"tenant": "sim", "dry_run": "true"}, content=body.encode(),
                            headers={"Content-Type": "text/csv"})
        assert response.status_code == 202, response.text
        assert response.json()["dry_run"] is True
        planned_id = response.json()["id"]
        planned = stack.wait_job(planned_id)
        results = {r["user"]: r for r in api.get(f"/v1/jobs/{planned_id}/results").json()["value"]}

    assert planned["status"] == "planned" and planned["dry_run"] is True
    assert {u: (r["status"], r["reason"]) for u, r in results.items()} == expect
    assert writes_since(stack, mark) == []  # a dry run sends no write at all
    with stack.control() as control:
        reads_after = control.get("/stats").json()["reads_by_endpoint"]
    # A large dry run lists the tenant (300 users: one page of 999) instead of reading users one by one.
    assert reads_after.get("users.list", 0) - reads_before.get("users.list", 0) == 1
    assert reads_after.get("users.get", 0) == reads_before.get("users.get", 0)
    assert planned["plan"]["changes"] == 5 and planned["plan"]["unchanged"] == 1
    assert planned["plan"]["predicted_failures"] == {"license_not_assigned": 1, "usage_location_missing": 1,
                                                     "user_not_found": 1}
    assert planned["plan"]["warnings"] == {"may_conflict": 1}
    seats = {line["sku"]: line for line in planned["plan"]["seats"]}
    assert (seats["ENTERPRISEPACK"]["needed"], seats["ENTERPRISEPACK"]["shortfall"]) == (3, 0)
    assert seats["STANDARDPACK"]["released"] == 1 and seats["EMS"]["needed"] == 1
    swap = next(r for r in results.values() if r["action"] == "add ENTERPRISEPACK; remove STANDARDPACK")
    assert [lic["sku"] for lic in swap["before"]["assignedLicenses"]] == ["STANDARDPACK"]
    never = results["never.hired@contoso.example"]
    assert never["before"] is None and "may take a while" in never["detail"]

    # Run it for real: it reads again and writes only the changes (the conflicting add is Graph's call).
    with stack.api() as api:
        run = api.post(f"/v1/jobs/{planned_id}/run")
        assert run.status_code == 202, run.text
        job = stack.wait_job(run.json()["id"])
        assert api.get(f"/v1/jobs/{planned_id}").json()["run_as"] == job["id"]
        assert api.post(f"/v1/jobs/{planned_id}/run").status_code == 409  # a dry run runs once
    assert (job["succeeded"], job["unchanged"], job["failed"], job["planned_from"]) == (4, 1, 4, planned_id)
    written = {str(w["user"]).lower() for w in writes_since(stack, mark)}
    changed = {u.lower() for u, (status, _) in expect.items() if status == "would_change"}
    assert written == changed  # the changes only: nothing for the unchanged user or the predicted failures
    conflicting = rows[3]["user"]

    # The same file again: everything that could change has (the swap too). Only the add Graph
    # refused as conflicting is tried again (the plan warns; Graph decides); nothing else is written.
    mark = time.time()
    again = stack.submit_csv(rows)
    done = stack.wait_job(again["id"])
    assert [str(w["user"]).lower() for w in writes_since(stack, mark)] == [conflicting.lower()]
    assert (done["unchanged"], done["succeeded"], done["failed"]) == (5, 0, 4)
    assert {r["reason"] for r in stack.results(again["id"]) if r["status"] == "failed"} == {
        "conflicting_licenses", "usage_location_missing", "license_not_assigned", "user_not_found"}


def set_seats(stack: Stack, sku: str, enabled: int) -> int:
    """Set a SKU's purchased seats; returns how many are free now."""
    with stack.control() as control:
        answer = control.patch(f"/skus/{sku}", json={"enabled": enabled})
        assert answer.status_code == 200, answer.text
        return int(answer.json()["freeUnits"])


def submit(stack: Stack, users: list[str], params: dict[str, str]) -> httpx.Response:
    body = "user,add\n" + "".join(f"{u},VISIOCLIENT\n" for u in users)
    with stack.api() as api:
        return api.post("/v1/jobs", params={"tenant": "sim", **params}, content=body.encode(),
                        headers={"Content-Type": "text/csv"})


def visio_holders(stack: Stack) -> int:
    return sum(VISIO in held(u) for u in sim_users(stack))


def test_two_jobs_racing_for_the_last_seats(stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
    users = [u["userPrincipalName"] for u in sim_users(stack)
             if not u["assignedLicenses"] and u.get("usageLocation")][:16]
    holders = visio_holders(stack)
    assert set_seats(stack, VISIO, holders + 5) == 5
    answers: list[httpx.Response] = []
    barrier = threading.Barrier(2)

    def race(batch: list[str]) -> None:
        barrier.wait()
        answers.append(submit(stack, batch, {}))

    threads = [threading.Thread(target=race, args=(users[i * 4:(i + 1) * 4],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status_code for a in answers) == [202, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409).json()
    assert refused["seats"] == [{"sku_id": VISIO, "sku": "VISIOCLIENT", "needed": 4, "released": 0, "free": 1,
                                 "shortfall": 3}]
    accepted = next(a for a in answers if a.status_code == 202).json()
    assert stack.wait_job(accepted["id"])["succeeded"] == 4

    # With on_seat_shortage=wait the job starts, takes the one seat left, pauses, and goes on by
    # itself once seats are bought; the tenant never holds more assignments than seats.
    waiting = submit(stack, users[8:12], {"on_seat_shortage": "wait"})
    assert waiting.status_code == 202, waiting.text
    assert any("VISIOCLIENT" in w for w in waiting.json()["warnings"])
    paused = stack.wait_status(waiting.json()["id"], "paused", timeout_s=60)
    assert paused["paused_reason"] == "no_free_seat" and paused["eta_s"] is None
    assert paused["failed"] == 0  # nobody failed for want of a seat
    assert visio_holders(stack) == holders + 5
    set_seats(stack, VISIO, holders + 20)
    job = stack.wait_job(waiting.json()["id"], timeout_s=60)
    assert (job["succeeded"], job["failed"]) == (4, 0)
    assert visio_holders(stack) == holders + 8
