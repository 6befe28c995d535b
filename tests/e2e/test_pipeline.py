"""End to end on real parts: Redis, graphsim over TLS with MSAL, the API and a Celery worker process."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import API_KEY, Stack, sim_profile

EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
STANDARDPACK = "18181a46-0d4e-45cd-891e-60aabd171b4e"
POWER_BI_PRO = "f8a1db68-be16-40ed-86d5-cb42ce701560"
SWAY_PLAN = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"

# Each test runs in 1 to 5 s; the first also starts the module's stack. Inner deadlines fail first.
pytestmark = pytest.mark.timeout(90)


def readonly_profile(sim: dict[str, Any]) -> str:
    """A second profile on the same simulated tenant, for an app without write permissions."""
    return sim_profile("readonly", sim, client_id=sim["readonly_client_id"], secret=sim["readonly_client_secret"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e")
    env = {"BULKLICENSE_RETRY_MAX_ATTEMPTS": "3", "BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05",
           "BULKLICENSE_CHUNK_SIZE": "7"}
    s = Stack(workdir, sim_args=["--users", "300", "--seed", "1", "--latency-ms", "5"], env=env,
              extra_profiles=readonly_profile)
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


def licenses(user: dict[str, Any]) -> dict[str, set[str]]:
    return {a["skuId"]: set(a["disabledPlans"]) for a in user["assignedLicenses"]}


def only(users: list[dict[str, Any]], sku_ids: set[str]) -> Iterator[dict[str, Any]]:
    return (u for u in users if set(licenses(u)) == sku_ids and u.get("usageLocation"))


def test_every_kind_of_row_ends_as_graph_says(stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
        users = control.get("/users").json()["value"]
    free = iter([u for u in users if not u["assignedLicenses"] and u.get("usageLocation")])
    no_location = iter([u for u in users if not u.get("usageLocation")])
    ems_only = only(users, {EMS})
    standard_only = only(users, {STANDARDPACK})
    e3_only = only(users, {E3})

    rows: list[dict[str, str]] = []
    expect: dict[str, tuple[str, str | None]] = {}

    def row(user: str, outcome: tuple[str, str | None], add: str = "", remove: str = "",
            plans: str = "", location: str = "") -> str:
        rows.append({"user": user, "add": add, "remove": remove, "disabled_plans": plans,
                     "usage_location": location, "employeeId": f"E{len(rows):04d}"})
        expect[user] = outcome
        return user

    ok = ("succeeded", None)
    add = row(next(free)["userPrincipalName"], ok, add="ENTERPRISEPACK")
    add_disabled = row(next(free)["userPrincipalName"], ok, add="ENTERPRISEPACK", plans="SWAY")
    multi = row(next(free)["userPrincipalName"], ok, add="ENTERPRISEPACK|POWER_BI_PRO", plans="SWAY")
    location_then_add = row(next(no_location)["userPrincipalName"], ok, add="EMS", location="US")
    location_only = row(next(free)["userPrincipalName"], ok, location="DE")
    remove = row(next(ems_only)["userPrincipalName"], ok, remove="EMS")
    swap = row(next(standard_only)["userPrincipalName"], ok, add="ENTERPRISEPACK", remove="STANDARDPACK")
    row("left.before.start@contoso.example", ("failed", "user_not_found"), add="EMS")
    row(next(no_location)["userPrincipalName"], ("failed", "usage_location_missing"), add="EMS")
    row(next(free)["userPrincipalName"], ("failed", "license_not_assigned"), remove="EMS")
    row(next(e3_only)["userPrincipalName"], ("failed", "conflicting_licenses"), add="STANDARDPACK")
    throttled_forever = row(next(free)["userPrincipalName"], ("failed", "retries_exhausted"), add="EMS")
    already = row(next(ems_only)["userPrincipalName"], ("unchanged", None), add="EMS")

    with stack.control() as control:
        assert control.get("/skus").json()  # the fixture is up
        control.post("/config", json={"force_429": {"count": 1000, "retry_after_s": 0.05,
                                                    "user": throttled_forever}})
    body = io.StringIO()
    writer = csv.DictWriter(body, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)

    with stack.api() as api:
        response = api.post("/v1/jobs", params={"tenant": "sim"}, content=body.getvalue().encode(),
                            headers={"Content-Type": "text/csv"})
        assert response.status_code == 202, response.text
        accepted = response.json()
        assert accepted["total"] == len(rows)
        job = stack.wait_job(accepted["id"], timeout_s=60)
        results = {r["user"]: r for r in api.get(f"/v1/jobs/{accepted['id']}/results").json()["value"]}

    with stack.control() as control:
        control.post("/config", json={"force_429": None})
        final = {u["userPrincipalName"]: u for u in control.get("/users").json()["value"]}

    assert job["status"] == "completed_with_errors"
    assert job["succeeded"] + job["failed"] + job["cancelled"] + job["unchanged"] == job["total"] == len(rows)
    assert (job["pending"], job["unchanged"]) == (0, 1)
    # Known from the read alone, so no write was sent for them.
    predicted = {"usage_location_missing", "license_not_assigned"}
    for user, (status, reason) in expect.items():
        result = results[user]
        assert (result["status"], result["reason"]) == (status, reason), result
        if reason in predicted:
            assert result["detail"] == "known from the user's state; nothing was sent" and result["graph_message"]
        elif status == "failed" and reason != "retries_exhausted":
            assert result["graph_code"] and result["graph_message"] and result["http_status"] in (400, 403, 404)
    assert results[throttled_forever]["attempts"] >= 3
    assert results[throttled_forever]["http_status"] == 429
    assert job["throttled"] >= 3
    # Each changed user carries its state before and after; the conflicting add was flagged.
    assert results[swap]["before"]["assignedLicenses"] == [{"skuId": STANDARDPACK, "disabledPlans": [],
                                                             "sku": "STANDARDPACK", "disabledPlanNames": []}]
    assert [lic["sku"] for lic in results[swap]["after"]["assignedLicenses"]] == ["ENTERPRISEPACK"]
    assert results[swap]["action"] == "add ENTERPRISEPACK; remove STANDARDPACK"
    conflicting = next(u for u, (_, r) in expect.items() if r == "conflicting_licenses")
    assert any("STANDARDPACK" in w and "ENTERPRISEPACK" in w for w in results[conflicting]["warnings"])
    assert job["plan"]["warnings"] == {"may_conflict": 1}
    assert job["plan"]["predicted_failures"] == {"license_not_assigned": 1, "usage_location_missing": 1,
                                                 "user_not_found": 1}

    # The simulator's final state matches every success, and nothing else changed.
    assert licenses(final[add]) == {E3: set()}
    assert licenses(final[add_disabled]) == {E3: {SWAY_PLAN}}
    assert licenses(final[multi]) == {E3: {SWAY_PLAN}, POWER_BI_PRO: set()}
    assert final[location_then_add]["usageLocation"] == "US"
    assert licenses(final[location_then_add]) == {EMS: set()}
    assert final[location_only]["usageLocation"] == "DE"
    assert licenses(final[remove]) == {}
    assert licenses(final[swap]) == {E3: set()}
    for user, (status, _) in expect.items():
        if status in ("failed", "unchanged") and user in final:
            before = next(u for u in users if u["userPrincipalName"] == user)
            assert licenses(final[user]) == licenses(before), user
    with stack.control() as control:  # nothing at all was written for the unchanged user
        assert control.get("/writes", params={"user": already}).json()["value"] == []

    # Extra columns come back with the results, and the failed rows are resubmittable as they are.
    with stack.api() as api:
        failed_csv = api.get(f"/v1/jobs/{accepted['id']}/results",
                             params={"status": "failed", "format": "csv"}).text
        parsed = list(csv.DictReader(io.StringIO(failed_csv)))
        assert {r["employeeId"] for r in parsed} <= {r["employeeId"] for r in rows}
        assert len(parsed) == job["failed"]
        again = api.post("/v1/jobs", params={"tenant": "sim"}, content=failed_csv.encode(),
                         headers={"Content-Type": "text/csv"})
        assert again.status_code == 202, again.text
        assert stack.wait_job(again.json()["id"], timeout_s=60)["failed"] >= 1


def test_an_app_without_write_permission_pauses_the_job_and_cancel_ends_it(stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
        users = [u for u in control.get("/users").json()["value"]
                 if not u["assignedLicenses"] and u.get("usageLocation")][:3]
    body = "user,add\n" + "".join(f"{u['userPrincipalName']},EMS\n" for u in users)
    with stack.api() as api:
        response = api.post("/v1/jobs", params={"tenant": "readonly"}, content=body.encode(),
                            headers={"Content-Type": "text/csv"})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        deadline = time.monotonic() + 60
        while (job := api.get(f"/v1/jobs/{job_id}").json())["status"] != "paused":
            assert time.monotonic() < deadline and job["pending"], job
            time.sleep(0.1)
        # The app's missing permission is the tenant's, not the users': nobody failed.
        assert (job["paused_reason"], job["failed"], job["pending"]) == ("forbidden", 0, 3), job
        assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        job = stack.wait_job(job_id)
        results = api.get(f"/v1/jobs/{job_id}/results").json()["value"]
    assert (job["status"], job["cancelled"]) == ("cancelled", 3), job
    assert {(r["status"], r["reason"]) for r in results} == {("cancelled", "cancelled")}


def test_cli_submit_waits_and_exits_nonzero_on_failures(stack: Stack, tmp_path: Path) -> None:
    with stack.control() as control:
        control.post("/reset")
        user = next(u for u in control.get("/users").json()["value"]
                    if not u["assignedLicenses"] and u.get("usageLocation"))
    good = tmp_path / "good.csv"
    good.write_text(f"user,add\n{user['userPrincipalName']},POWER_BI_PRO\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("user,add\nnobody.here@contoso.example,POWER_BI_PRO\n")
    env = {**stack.env, "BULKLICENSE_API_URL": stack.api_url}
    args = [sys.executable, "-m", "cli.main", "submit", "--tenant", "sim", "--wait", "--api-key"]
    ok = subprocess.run([*args, API_KEY, str(good)], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    failed = subprocess.run([*args, API_KEY, str(bad)], env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    refused = subprocess.run([*args, API_KEY, str(tmp_path / "good.csv").replace("good", "bad"), "--tenant", "nope"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "unknown tenant profile" in refused.stderr


def test_cli_status_results_and_cancel(stack: Stack, tmp_path: Path) -> None:
    with stack.control() as control:
        control.post("/reset")
        user = next(u for u in control.get("/users").json()["value"]
                    if not u["assignedLicenses"] and u.get("usageLocation"))
    with stack.api() as api:
        response = api.post("/v1/jobs", params={"tenant": "sim"},
                            content=f"user,add,employeeId\n{user['userPrincipalName']},EMS,E77\n"
                                    "nobody.else@contoso.example,EMS,E78\n".encode(),
                            headers={"Content-Type": "text/csv"})
        job_id = response.json()["id"]
    stack.wait_job(job_id)
    env = {**stack.env, "BULKLICENSE_API_URL": stack.api_url, "BULKLICENSE_API_KEY": API_KEY}
    cli = [sys.executable, "-m", "cli.main"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=60)

    status = run("status", job_id)
    assert status.returncode == 0, status.stderr
    assert '"status": "completed_with_errors"' in status.stdout
    out = tmp_path / "failed.csv"
    results = run("results", job_id, "--status", "failed", "-o", str(out))
    assert results.returncode == 0, results.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and "nobody.else@contoso.example" in lines[1] and "user_not_found" in lines[1]
    assert "E78" in lines[1]
    cancel = run("cancel", job_id)  # the job has ended: nothing to cancel
    assert cancel.returncode == 1 and "409" in cancel.stderr and "nothing to cancel" in cancel.stderr
    missing = run("status", "0" * 32)
    assert missing.returncode == 1 and "404" in missing.stderr
    malformed = run("status", "no-such-job")
    assert malformed.returncode == 1 and "422" in malformed.stderr and "job_id" in malformed.stderr
