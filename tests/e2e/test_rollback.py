"""Rollback and the audit trail end to end on real processes: Redis, graphsim over TLS, a worker, the API.

A job of adds, removals (of licenses held with disabled plans), swaps, a disabled-plans change and
usage-location changes is run, one of its users is changed by someone else, and the job is rolled
back: graphsim must hold exactly the snapshot taken before the job, but for the drifted user (left
as it was) and a usage location Graph cannot clear. Then the rollback is rolled back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.stack import API_KEY, OTHER_KEY, SIM_KEY, Stack, UserState, sim_profile, user_state

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # ENTERPRISEPACK
E1 = "18181a46-0d4e-45cd-891e-60aabd171b4e"  # STANDARDPACK
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
BI = "f8a1db68-be16-40ed-86d5-cb42ce701560"  # POWER_BI_PRO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HEADER = ["user", "add", "remove", "disabled_plans", "usage_location"]


def other_profile(sim: dict[str, Any]) -> str:
    """A second tenant profile (on the same simulated tenant), for a key scoped to it alone."""
    return sim_profile("other", sim)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("rollback")
    env = {"BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05", "BULKLICENSE_CHUNK_SIZE": "3",
           "BULKLICENSE_SKU_CACHE_TTL_S": "0",
           # Named keys: the audit trail shows these names, never the keys.
           "BULKLICENSE_API_KEYS": f"admin={API_KEY}:*,hr-portal={SIM_KEY}:sim,ops={OTHER_KEY}:other"}
    s = Stack(workdir, sim_args=["--users", "300", "--seed", "7", "--latency-ms", "5"], env=env,
              extra_profiles=other_profile)
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


def sim_users(stack: Stack) -> list[dict[str, Any]]:
    with stack.control() as control:
        users: list[dict[str, Any]] = control.get("/users").json()["value"]
    return users


def snapshot(stack: Stack) -> dict[str, UserState]:
    """Every user's usage location and licenses (skuId → disabled plans)."""
    return {u["userPrincipalName"]: user_state(u) for u in sim_users(stack)}


def writes_since(stack: Stack, since: float) -> list[dict[str, Any]]:
    with stack.control() as control:
        value: list[dict[str, Any]] = control.get("/writes", params={"since": since}).json()["value"]
    return value


def submit(stack: Stack, rows: list[list[str]], key: str = API_KEY, **params: str) -> str:
    body = ",".join(HEADER) + "\n" + "".join(",".join(row) + "\n" for row in rows)
    with stack.api(key) as api:
        response = api.post("/v1/jobs", params={"tenant": "sim", **params}, content=body.encode(),
                            headers={"Content-Type": "text/csv",
                                     "Content-Disposition": 'attachment; filename="changes.csv"'})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def rollback(stack: Stack, job_id: str, **params: str) -> dict[str, Any]:
    with stack.api() as api:
        response = api.post(f"/v1/jobs/{job_id}/rollback", params=params)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def by_user(stack: Stack, job_id: str) -> dict[str, dict[str, Any]]:
    return {r["user"]: r for r in stack.results(job_id)}


def audit_once_finished(stack: Stack, jobs: list[str], timeout_s: float = 30) -> str:
    """The sim tenant's audit trail, read once it holds the `finished` event of each job.

    A job reports its end as soon as its last user is recorded; the worker appends `finished` just after.
    """
    deadline = time.monotonic() + timeout_s
    with stack.api() as api:
        while True:
            text = api.get("/v1/audit", params={"tenant": "sim"}).text
            done = {e["job"] for e in map(json.loads, text.splitlines()) if e["action"] == "finished"}
            if set(jobs) <= done:
                return text
            assert time.monotonic() < deadline, f"no finished event for {set(jobs) - done}: {text}"
            time.sleep(0.1)


class Cast:
    """The users of the scenario, picked from the simulated tenant by what they hold."""

    def __init__(self, users: list[dict[str, Any]]) -> None:
        def bare(u: dict[str, Any]) -> bool:
            return not u["assignedLicenses"] and bool(u.get("usageLocation"))

        def only(sku: str) -> Iterator[str]:
            return (u["userPrincipalName"] for u in users
                    if [a["skuId"] for a in u["assignedLicenses"]] == [sku] and u.get("usageLocation"))

        free = iter(u["userPrincipalName"] for u in users if bare(u))
        self.location_of = {u["userPrincipalName"]: u.get("usageLocation") for u in users}
        self.added, self.added_with_plans = next(free), next(free)
        self.removed, self.swapped_with_plans, self.replanned = next(free), next(free), next(free)
        self.swapped = next(only(E1))
        self.moved, self.drifted = next(free), next(free)
        self.relocated = next(only(EMS))
        self.unchanged = next(only(BI))
        self.unlocated = next(u["userPrincipalName"] for u in users
                              if not u["assignedLicenses"] and not u.get("usageLocation"))

    def new_location(self, upn: str) -> str:
        return "NL" if self.location_of[upn] != "NL" else "BE"


def test_a_job_is_rolled_back_to_the_snapshot_but_for_drift_and_its_rollback_too(stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
    cast = Cast(sim_users(stack))
    # Licenses with disabled plans first, so that the job below removes and swaps such licenses.
    setup = submit(stack, [[cast.removed, "ENTERPRISEPACK", "", "SWAY;YAMMER_ENTERPRISE", ""],
                           [cast.swapped_with_plans, "ENTERPRISEPACK", "", "SWAY", ""],
                           [cast.replanned, "ENTERPRISEPACK", "", "SWAY", ""]])
    assert stack.wait_job(setup)["succeeded"] == 3

    before = snapshot(stack)
    assert before[cast.removed][1][E3] and before[cast.swapped_with_plans][1][E3]  # held with plans off
    moved_to = cast.new_location(cast.moved)
    job_id = submit(stack, [
        [cast.added, "POWER_BI_PRO", "", "", ""],
        [cast.added_with_plans, "ENTERPRISEPACK", "", "SWAY", ""],
        [cast.removed, "", "ENTERPRISEPACK", "", ""],
        [cast.swapped, "ENTERPRISEPACK", "STANDARDPACK", "", ""],
        [cast.swapped_with_plans, "STANDARDPACK", "ENTERPRISEPACK", "", ""],
        [cast.replanned, "ENTERPRISEPACK", "", "", ""],  # every plan on again
        [cast.moved, "EMS", "", "", moved_to],
        [cast.relocated, "", "", "", cast.new_location(cast.relocated)],
        [cast.unlocated, "POWER_BI_PRO", "", "", "FR"],
        [cast.drifted, "EMS", "", "", ""],
        [cast.unchanged, "POWER_BI_PRO", "", "", ""],
    ], key=SIM_KEY)
    job = stack.wait_job(job_id)
    assert (job["succeeded"], job["unchanged"], job["failed"]) == (10, 1, 0), job
    after = snapshot(stack)

    # Someone else changes one of the job's users in between.
    other = submit(stack, [[cast.drifted, "POWER_BI_PRO", "", "", ""]])
    assert stack.wait_job(other)["succeeded"] == 1
    drifted_state = snapshot(stack)[cast.drifted]

    # A dry run of the rollback reads every changed user and writes nothing.
    mark = time.time()
    preview = rollback(stack, job_id, dry_run="true")
    planned = stack.wait_job(preview["id"])
    assert (planned["status"], planned["kind"], planned["rollback_of"], planned["total"]) == (
        "planned", "rollback", job_id, 10)
    assert (planned["would_change"], planned["would_fail"], planned["unchanged"]) == (9, 1, 0)
    assert writes_since(stack, mark) == []
    assert snapshot(stack) == {**after, cast.drifted: drifted_state}

    # The rollback itself.
    mark = time.time()
    back = rollback(stack, job_id)
    done = stack.wait_job(back["id"])
    assert (done["status"], done["kind"], done["rollback_of"]) == ("completed_with_errors", "rollback", job_id)
    assert (done["succeeded"], done["failed"]) == (9, 1)
    results = by_user(stack, back["id"])
    assert results[cast.drifted]["reason"] == "drifted"
    assert results[cast.drifted]["graph_message"] == (
        "changed since the job: holds POWER_BI_PRO, which the job did not leave")
    assert "Graph cannot clear a usage location" in results[cast.unlocated]["detail"]
    assert cast.unchanged not in results

    now = snapshot(stack)
    untouched = {cast.drifted, cast.unlocated}
    assert {u: s for u, s in now.items() if u not in untouched} == {
        u: s for u, s in before.items() if u not in untouched}
    assert now[cast.drifted] == drifted_state  # left as it was
    assert now[cast.unlocated] == ("FR", before[cast.unlocated][1])  # licenses back; the location stays
    writes = writes_since(stack, mark)
    assert not [w for w in writes if str(w["user"]).lower() in (cast.drifted.lower(), cast.unchanged.lower())]
    moved = [w["method"] for w in writes if str(w["user"]).lower() == cast.moved.lower()]
    assert moved == ["POST", "PATCH"]  # the licenses that needed the location went first
    with stack.api() as api:
        assert api.get(f"/v1/jobs/{job_id}").json()["rolled_back_by"] == back["id"]
        again = api.post(f"/v1/jobs/{job_id}/rollback")
        assert again.status_code == 409 and back["id"] in again.json()["detail"]

    # Undo the undo: back to the state the job left (the drifted user was never part of it).
    undo = rollback(stack, back["id"])
    assert stack.wait_job(undo["id"])["succeeded"] == 9
    assert snapshot(stack) == {**after, cast.drifted: drifted_state}


def test_the_audit_trail_names_actors_and_keeps_tenants_apart(stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
    cast = Cast(sim_users(stack))
    job_id = submit(stack, [[cast.added, "EMS", "", "", ""], [cast.unchanged, "", "POWER_BI_PRO", "", ""]],
                    key=SIM_KEY)
    assert stack.wait_job(job_id)["succeeded"] == 2
    # The CLI, as an admin would: a rollback of the job.
    cli = subprocess.run([sys.executable, "-m", "cli.main", "rollback", job_id, "--wait", "--api-url",
                          stack.api_url, "--api-key", API_KEY], env=stack.env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    with stack.api() as api:
        back_id = api.get(f"/v1/jobs/{job_id}").json()["rolled_back_by"]
    cancelled = submit(stack, [[cast.moved, "EMS", "", "", ""]], key=SIM_KEY, dry_run="true")
    with stack.api(SIM_KEY) as api:
        # A one-user dry run may have ended already: then there is nothing to cancel, and nothing is recorded.
        cancel_status = api.post(f"/v1/jobs/{cancelled}/cancel").status_code
    assert cancel_status in (202, 409)
    ended = stack.wait_job(cancelled)
    assert cancel_status == 202 or ended["status"] == "planned"

    text = audit_once_finished(stack, [job_id, back_id, cancelled])
    events = [json.loads(line) for line in text.splitlines()]
    # People by their key's name; the job's own steps by the workers, as system.
    mine = sorted((e["action"], e["actor"]) for e in events if e["job"] == job_id)
    assert mine == [("finished", "system"), ("plan_finished", "system"), ("rollback_requested", "admin"),
                    ("started", "system"), ("submitted", "hr-portal")]
    rollback_event = next(e for e in events if e["action"] == "rollback_requested" and e["job"] == job_id)
    assert rollback_event["details"] == {"rollback_job": back_id, "users": 2, "dry_run": False}
    assert [(e["action"], e["actor"]) for e in events if e["job"] == back_id] == [
        ("plan_finished", "system"), ("started", "system"), ("finished", "system")]
    finished = next(e for e in events if e["job"] == back_id and e["action"] == "finished")
    assert (finished["details"]["status"], finished["details"]["succeeded"]) == ("completed", 2)
    cancels = [e["actor"] for e in events if e["job"] == cancelled and e["action"] == "cancelled"]
    assert cancels == (["hr-portal"] if cancel_status == 202 else [])
    submitted = next(e for e in events if e["job"] == job_id and e["action"] == "submitted")
    assert submitted["details"]["file"] == "changes.csv" and submitted["details"]["rows"] == 2
    for key in (API_KEY, SIM_KEY, OTHER_KEY):
        assert key not in text

    # A key scoped to another tenant sees none of it.
    with stack.api(OTHER_KEY) as api:
        assert api.get("/v1/audit", params={"tenant": "sim"}).status_code == 403
        own = [json.loads(line) for line in api.get("/v1/audit").text.splitlines()]
        assert all(e["tenant"] == "other" for e in own)
        assert api.get("/v1/audit", params={"job": job_id}).text == ""
        assert api.get(f"/v1/jobs/{job_id}").status_code == 404
        assert api.post(f"/v1/jobs/{job_id}/rollback").status_code == 404


def test_an_admin_center_export_under_mode_exact_is_planned_run_and_rolled_back(stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
    users = sim_users(stack)

    def holding(*skus: str) -> Iterator[str]:
        return (u["userPrincipalName"] for u in users
                if sorted(a["skuId"] for a in u["assignedLicenses"]) == sorted(skus) and u.get("usageLocation"))

    swapped, stripped, added = next(holding(E1)), next(holding(BI)), next(holding())
    before = snapshot(stack)
    # What the admin center's user export writes: display names joined by "+", Unlicensed.
    export = ("User principal name,Display name,Licenses,Block credential,Object Id\n"
              f"{swapped},A,Office 365 E3,False,1\n{stripped},B,Unlicensed,False,2\n{added},C,Power BI Pro,False,3\n")
    with stack.api() as api:
        refused = api.post("/v1/jobs", params={"tenant": "sim", "dry_run": "true"}, content=export.encode(),
                           headers={"Content-Type": "text/csv"})
        assert refused.status_code == 422 and "choose mode=exact" in refused.text
        planned = api.post("/v1/jobs", params={"tenant": "sim", "dry_run": "true", "mode": "exact"},
                           content=export.encode(), headers={"Content-Type": "text/csv"})
        assert planned.status_code == 202, planned.text
    plan_id = planned.json()["id"]
    plan = stack.wait_job(plan_id)
    assert (plan["status"], plan["mode"], plan["would_change"]) == ("planned", "exact", 3)
    assert {r["user"]: r["action"] for r in stack.results(plan_id)} == {
        swapped: "add ENTERPRISEPACK; remove STANDARDPACK", stripped: "remove POWER_BI_PRO", added: "add POWER_BI_PRO"}
    assert snapshot(stack) == before  # a dry run writes nothing

    with stack.api() as api:
        run = api.post(f"/v1/jobs/{plan_id}/run")
    assert run.status_code == 202, run.text
    done = stack.wait_job(run.json()["id"])
    assert (done["status"], done["succeeded"], done["mode"]) == ("completed", 3, "exact")
    now = snapshot(stack)
    assert list(now[swapped][1]) == [E3] and now[stripped][1] == {} and list(now[added][1]) == [BI]

    back = stack.wait_job(rollback(stack, run.json()["id"])["id"])
    assert (back["status"], back["succeeded"]) == ("completed", 3)
    assert {u: snapshot(stack)[u] for u in (swapped, stripped, added)} == {
        u: before[u] for u in (swapped, stripped, added)}
