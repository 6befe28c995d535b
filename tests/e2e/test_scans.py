"""Jobs built from a scan of the tenant, end to end on real processes: reclamation and the redundant-direct cleanup."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

INACTIVE_DAYS = 90
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("scans")
    env = {"BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05", "BULKLICENSE_CHUNK_SIZE": "10",
           "BULKLICENSE_REAPER_INTERVAL_S": "0.5", "BULKLICENSE_SKU_CACHE_TTL_S": "0"}
    # 150 users: two pages of sign-ins (120 a page), a third of them licensed through groups.
    s = Stack(workdir, sim_args=["--users", "150", "--seed", "7", "--latency-ms", "2", "--group-licensed-share",
                                 "0.3", "--group-license-delay-s", "0"], env=env)
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


def licenses(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every user's effective licenses as graphsim holds them, by user id."""
    with stack.control() as control:
        return {u["id"]: u for u in control.get("/licenses").json()["value"]}


def effective(view: dict[str, Any]) -> set[tuple[str, tuple[str, ...]]]:
    """(skuId, disabled plans) of what a user can use, however it is assigned."""
    return {(lic["skuId"], tuple(sorted(lic["disabledPlans"]))) for lic in view["licenses"]}


def direct_only(view: dict[str, Any]) -> set[str]:
    """SKUs the user holds directly and through no group: what reclamation may take back."""
    return {lic["skuId"] for lic in view["licenses"] if lic["direct"] and not lic["groups"]}


def direct_skus(view: dict[str, Any]) -> set[str]:
    """SKUs the user holds through a direct assignment."""
    return {lic["skuId"] for lic in view["licenses"] if lic["direct"]}


def seats_held(views: dict[str, dict[str, Any]]) -> Counter[str]:
    """Users holding each SKU (one seat each, however assigned)."""
    return Counter(lic["skuId"] for view in views.values() for lic in view["licenses"])


def nest_group(stack: Stack, outer: str, nested: str) -> None:
    """Make a group a member of another, through Graph as a groups administrator (the control surface adds users)."""
    sim = stack.sim
    with httpx.Client(verify=stack.tls(), timeout=30) as http:
        token = http.post(f"{sim['authority']}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": sim["groups_admin_client_id"],
            "client_secret": sim["groups_admin_client_secret"], "scope": "https://graph.microsoft.com/.default"})
        assert token.status_code == 200, token.text
        added = http.post(f"{sim['graph_url']}/v1.0/groups/{outer}/members/$ref",
                          headers={"Authorization": f"Bearer {token.json()['access_token']}"},
                          json={"@odata.id": f"{sim['graph_url']}/v1.0/directoryObjects/{nested}"})
        assert added.status_code == 204, added.text


def seed_activity(stack: Stack, views: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Give every user a known lifecycle by position; returns id -> category."""
    categories = ["active", "inactive", "disabled", "never_old", "never_new", "active", "inactive_new"]
    kinds: dict[str, str] = {}
    with stack.control() as control:
        for i, user_id in enumerate(sorted(views)):
            kind = categories[i % len(categories)]
            body: dict[str, Any] = {"accountEnabled": kind != "disabled",
                                    "createdDaysAgo": 30 if kind.endswith("_new") else 400}
            if kind in ("never_old", "never_new"):
                body["signInActivity"] = None
            else:
                body["signedInDaysAgo"] = {"active": 3, "disabled": 200}.get(kind, 200 if kind == "inactive" else 25)
            assert control.patch(f"/users/{user_id}", json=body).status_code == 200
            kinds[user_id] = kind
    return kinds


def test_a_reclamation_dry_run_lists_exactly_the_unused_licensed_users_and_its_run_frees_their_seats(
        stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
    views = licenses(stack)
    kinds = seed_activity(stack, views)
    unused = sorted(u for u, kind in kinds.items() if kind in ("inactive", "disabled", "never_old")
                    and direct_only(views[u]))
    # Left alone: one unused user by UPN pattern, two through a group nested in the exclusion group.
    by_pattern, in_nested, in_outer = unused[0], unused[1], unused[2]
    with stack.control() as control:
        nested = control.post("/groups", json={"displayName": "Leave - nested", "members": [in_nested]}).json()
        outer = control.post("/groups", json={"displayName": "Leave - on leave", "members": [in_outer]}).json()
    nest_group(stack, outer["id"], nested["id"])
    pattern = views[by_pattern]["userPrincipalName"].upper()  # patterns match in any case
    expected = {u: direct_only(views[u]) for u in unused if u not in (by_pattern, in_nested, in_outer)}
    group_held_kept = [u for u in expected if any(lic["groups"] for lic in views[u]["licenses"])]
    assert len(expected) >= 10 and group_held_kept  # some keep a license a group gives them

    mark = time.time()
    with stack.api() as api:
        response = api.post("/v1/reclaim", params={"tenant": "sim", "inactive_days": INACTIVE_DAYS, "dry_run": "true"},
                            json={"exclude_group": outer["id"], "exclude_upns": [pattern]})
        assert response.status_code == 202, response.text
        planned = stack.wait_job(response.json()["id"])
    assert (planned["status"], planned["kind"], planned["scan"]["outcome"]) == ("planned", "reclaim", "done")
    rows = stack.results(planned["id"])
    assert {r["user"]: r["status"] for r in rows} == dict.fromkeys(expected, "would_change")
    names = {lic["skuId"]: lic["skuPartNumber"] for view in views.values() for lic in view["licenses"]}
    assert {r["user"]: set(r["remove"].split(";")) for r in rows} == {
        u: {names[sku] for sku in skus} for u, skus in expected.items()}
    assert all(r["action"].startswith("remove ") for r in rows)
    freed = Counter(sku for skus in expected.values() for sku in skus)
    seats = {line["sku_id"]: line["released"] for line in planned["plan"]["seats"]}
    assert seats == dict(freed)
    summary = planned["scan"]["summary"]
    assert summary["excluded"]["exclusion_group"] == 2 and summary["excluded"]["upn_pattern"] == 1
    assert summary["sign_ins_read"] is True and summary["excluded"]["created_recently"] > 0
    with stack.control() as control:
        assert control.get("/writes", params={"since": mark}).json()["value"] == []

    # Someone previewed comes back before the run: the run scans again and leaves that user alone.
    returned = sorted(expected)[0]
    with stack.control() as control:
        assert control.patch(f"/users/{returned}", json={"signedInDaysAgo": 1}).status_code == 200
    freed -= Counter(expected.pop(returned))
    before_seats = seats_held(licenses(stack))
    with stack.api() as api:
        run = api.post(f"/v1/jobs/{planned['id']}/run")
        assert run.status_code == 202, run.text
        job = stack.wait_job(run.json()["id"])
    assert (job["status"], job["kind"], job["succeeded"]) == ("completed", "reclaim", len(expected))
    assert job["scan"]["summary"]["excluded"]["changed_since_preview"] == 1
    after = licenses(stack)
    assert before_seats - seats_held(after) == freed
    for user_id, view in after.items():
        left = {lic["skuId"] for lic in view["licenses"]}
        wanted = {lic["skuId"] for lic in views[user_id]["licenses"]} - expected.get(user_id, set())
        assert left == wanted, view["userPrincipalName"]

    # Undone with the ordinary rollback: every reclaimed user holds what it held before.
    with stack.api() as api:
        back = api.post(f"/v1/jobs/{job['id']}/rollback")
        assert back.status_code == 202, back.text
        undone = stack.wait_job(back.json()["id"])
    assert (undone["status"], undone["succeeded"]) == ("completed", len(expected))
    restored = licenses(stack)
    assert {u: effective(restored[u]) for u in expected} == {u: effective(views[u]) for u in expected}


def test_without_sign_in_activity_reclamation_takes_disabled_accounts_only_and_says_why(stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
        control.post("/config", json={"premium": False})
    try:
        views = licenses(stack)
        kinds = seed_activity(stack, views)
        with stack.api() as api:
            response = api.post("/v1/reclaim", params={"tenant": "sim", "inactive_days": INACTIVE_DAYS})
            assert response.status_code == 202, response.text
            planned = stack.wait_job(response.json()["id"])
    finally:
        with stack.control() as control:
            control.post("/config", json={"premium": True})
    assert planned["status"] == "planned" and planned["scan"]["summary"]["sign_ins_read"] is False
    assert any("Microsoft Entra ID P1" in w for w in planned["warnings"])
    disabled = {u for u, kind in kinds.items() if kind == "disabled" and direct_only(views[u])}
    assert {r["user"] for r in stack.results(planned["id"])} == disabled


def test_the_cleanup_removes_only_redundant_direct_assignments_and_every_user_keeps_the_same_licenses(
        stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
    before = licenses(stack)
    with stack.api() as api:
        response = api.post("/v1/cleanup/redundant-direct", params={"tenant": "sim"})
        assert response.status_code == 202, response.text
        planned = stack.wait_job(response.json()["id"])
        assert planned["status"] == "planned" and planned["would_change"] == planned["total"] > 0
        assert all(line["released"] == 0 and line["needed"] == 0 for line in planned["plan"]["seats"])
        run = api.post(f"/v1/jobs/{planned['id']}/run")
        assert run.status_code == 202, run.text
        job = stack.wait_job(run.json()["id"])
    assert (job["status"], job["kind"], job["failed"]) == ("completed", "redundant_direct", 0)
    after = licenses(stack)
    assert job["succeeded"] > 0
    for user_id, view in before.items():
        assert effective(after[user_id]) == effective(view), view["userPrincipalName"]
    lost_direct = {u: {lic["skuId"] for lic in before[u]["licenses"] if lic["direct"]}
                   - {lic["skuId"] for lic in after[u]["licenses"] if lic["direct"]} for u in before}
    lost_direct = {u: skus for u, skus in lost_direct.items() if skus}
    assert set(lost_direct) == {r["user"] for r in stack.results(job["id"])}
    for user_id, skus in lost_direct.items():
        for lic in before[user_id]["licenses"]:
            if lic["skuId"] in skus:
                assert lic["groups"], (before[user_id]["userPrincipalName"], lic)  # a group covered it
    assert seats_held(after) == seats_held(before)

    # Undone with the ordinary rollback: the direct assignments are back, nothing else moved.
    with stack.api() as api:
        back = api.post(f"/v1/jobs/{job['id']}/rollback")
        assert back.status_code == 202, back.text
        undone = stack.wait_job(back.json()["id"])
    assert (undone["status"], undone["succeeded"]) == ("completed", job["succeeded"])
    restored = licenses(stack)
    assert {u: (effective(v), direct_skus(v)) for u, v in restored.items()} == {
        u: (effective(v), direct_skus(v)) for u, v in before.items()}


def test_the_group_license_errors_report_lists_what_graph_says_per_user(stack: Stack) -> None:
    with stack.control() as control:
        control.post("/reset")
        views = licenses(stack)
        # No EMS seat left: a group giving EMS to three more users fails for each (CountViolation).
        assert control.patch(f"/skus/{EMS}", json={"enabled": seats_held(views)[EMS]}).status_code == 200
        lacking = [u for u, view in views.items() if EMS not in {lic["skuId"] for lic in view["licenses"]}][:3]
        created = control.post("/groups", json={"displayName": "LIC - EMS for all", "members": lacking,
                                                "licenses": [{"sku": "EMS"}]})
        assert created.status_code == 201, created.text
    in_error = {(u["id"], e["group"], e["skuId"], e["error"]) for u in licenses(stack).values()
                for e in u["groupErrors"]}
    assert {(u, created.json()["id"], EMS, "CountViolation") for u in lacking} <= in_error
    with stack.api() as api:
        response = api.get("/v1/tenants/sim/group-license-errors")
    assert response.status_code == 200, response.text
    report = response.json()
    assert {(r["user_id"], r["group_id"], r["sku_id"], r["error"]) for r in report["value"]} == in_error
    assert report["truncated"] is False and all(r["group"].startswith("LIC - ") for r in report["value"])
