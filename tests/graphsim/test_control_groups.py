"""The control surface for group licensing: set-up without throttling, effective licenses user by user."""

from __future__ import annotations

from typing import Any

import httpx

from graphsim.server import SimServer
from tests.graphsim.helpers import SKU, assign_body, free_users, licensed_user, processing_state


def _effective(control: httpx.Client) -> dict[str, list[dict[str, Any]]]:
    return {u["id"]: u["licenses"] for u in control.get("/licenses").json()["value"]}


def test_create_a_licensed_group_at_once_without_spending_graph_budget(sim: SimServer, control: httpx.Client,
                                                                       graph: httpx.Client) -> None:
    users = free_users(sim, 3)
    before = _effective(control)
    response = control.post("/groups", json={"displayName": "Set-up", "members": [*users[:2],
                                                                                  sim.state.users[users[2]].upn],
                                             "licenses": [{"sku": "ENTERPRISEPACK", "disabledPlans": ["SWAY"]},
                                                          {"sku": SKU["EMS"]}]})
    assert response.status_code == 201
    group = response.json()
    assert group["members"] == users and group["licenseProcessingState"] == "ProcessingComplete"
    assert [a["skuPartNumber"] for a in group["assignedLicenses"]] == ["ENTERPRISEPACK", "EMS"]
    assert group["lastProcessing"]["usersSucceeded"] == 3
    sway = next(p.plan_id for p in sim.state.sku_by_part("ENTERPRISEPACK").plans if p.name == "SWAY")
    after = _effective(control)
    for user in users:
        assert after[user] == [
            {"skuId": SKU["ENTERPRISEPACK"], "skuPartNumber": "ENTERPRISEPACK", "disabledPlans": [sway],
             "direct": False, "groups": [group["id"]]},
            {"skuId": SKU["EMS"], "skuPartNumber": "EMS", "disabledPlans": [], "direct": False,
             "groups": [group["id"]]}]
    # Everyone else is exactly as before: the comparison a test makes user by user.
    assert {u: v for u, v in after.items() if u not in users} == {u: v for u, v in before.items() if u not in users}
    stats = control.get("/stats").json()
    assert stats["writes_accepted"] == 0 and control.get("/writes").json()["count"] == 0
    # Graph sees the group as any other.
    assert graph.get(f"/groups/{group['id']}?$select=displayName").json()["displayName"] == "Set-up"


def test_control_membership_and_license_changes(sim: SimServer, control: httpx.Client, graph: httpx.Client) -> None:
    first, second = free_users(sim, 2)
    group = control.post("/groups", json={"displayName": "G", "members": [first],
                                          "licenses": [{"sku": "POWER_BI_PRO"}]}).json()
    changed = control.post(f"/groups/{group['id']}/members", json={"add": [second], "remove": [first]}).json()
    assert changed["members"] == [second]
    effective = _effective(control)
    assert effective[first] == [] and [e["skuPartNumber"] for e in effective[second]] == ["POWER_BI_PRO"]
    # queue: true behaves like a Graph change: processed after the delay (0 here: on the next request).
    queued = control.post(f"/groups/{group['id']}/licenses", json={"add": [{"sku": "EMS"}], "queue": True}).json()
    assert queued["licenseProcessingState"] == "QueuedForProcessing"
    assert processing_state(graph, group["id"]) == "ProcessingComplete"
    assert [e["skuPartNumber"] for e in _effective(control)[second]] == ["POWER_BI_PRO", "EMS"]
    removed = control.post(f"/groups/{group['id']}/licenses", json={"remove": ["POWER_BI_PRO", "EMS"]}).json()
    assert removed["assignedLicenses"] == [] and _effective(control)[second] == []


def test_control_reprocess_after_buying_seats(sim: SimServer, control: httpx.Client) -> None:
    consumed = sim.state.consumed[SKU["VISIOCLIENT"]]
    assert control.patch("/skus/VISIOCLIENT", json={"enabled": consumed}).status_code == 200
    users = free_users(sim, 2)
    group = control.post("/groups", json={"displayName": "Visio", "members": users,
                                          "licenses": [{"sku": "VISIOCLIENT"}]}).json()
    assert group["membersWithLicenseErrors"] == 2 and group["lastProcessing"]["usersFailed"] == 2
    view = control.get(f"/users/{users[0]}/licenses").json()
    assert view["licenses"] == [] and view["groupErrors"] == [
        {"skuId": SKU["VISIOCLIENT"], "skuPartNumber": "VISIOCLIENT", "group": group["id"], "state": "Error",
         "error": "CountViolation"}]
    assert control.patch("/skus/VISIOCLIENT", json={"enabled": consumed + 2}).status_code == 200
    again = control.post(f"/groups/{group['id']}/reprocess").json()
    assert again["membersWithLicenseErrors"] == 0 and again["lastProcessing"]["usersSucceeded"] == 2


def test_user_view_shows_lifecycle_states_and_groups(sim: SimServer, control: httpx.Client,
                                                     graph: httpx.Client) -> None:
    user = licensed_user(sim, "EMS")
    group = control.post("/groups", json={"displayName": "EMS", "members": [user],
                                          "licenses": [{"sku": "EMS"}]}).json()
    view = control.get(f"/users/{user}").json()
    assert view["memberOf"] == [group["id"]]
    assert [(s["assignedByGroup"], s["skuId"]) for s in view["licenseAssignmentStates"]
            if s["skuId"] == SKU["EMS"]] == [(None, SKU["EMS"]), (group["id"], SKU["EMS"])]
    assert {"createdDateTime", "accountEnabled", "signInActivity", "employeeHireDate"} <= set(view)
    # A direct removal leaves the user holding EMS through the group.
    assert graph.post(f"/users/{user}/assignLicense", json=assign_body(remove=["EMS"])).status_code == 200
    held = next(e for e in control.get(f"/users/{user}/licenses").json()["licenses"] if e["skuId"] == SKU["EMS"])
    assert held["direct"] is False and held["groups"] == [group["id"]]


def test_control_group_errors_and_reset(sim: SimServer, control: httpx.Client) -> None:
    for bad in ({}, {"displayName": "X", "members": ["nobody@contoso.example"]},
                {"displayName": "X", "licenses": [{"sku": "NOPE"}]},
                {"displayName": "X", "licenses": [{"sku": "EMS", "disabledPlans": ["SWAY"]}]},
                {"displayName": "X", "owner": "me"}):
        response = control.post("/groups", json=bad)
        assert response.status_code == 400 and "error" in response.json(), bad
    assert control.get("/groups/00000000-0000-4000-8000-000000000000").status_code == 404
    group = control.post("/groups", json={"displayName": "Temp"}).json()
    assert control.post(f"/groups/{group['id']}/members", json={"add": [], "queue": "yes"}).status_code == 400
    assert [g["id"] for g in control.get("/groups").json()["value"]] == [group["id"]]
    control.post("/reset")
    assert control.get("/groups").json()["value"] == [] and sim.state.groups == {}
