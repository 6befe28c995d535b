"""Group-based licensing: asynchronous processing, inherited states, seats once per user and SKU, errors."""

from __future__ import annotations

import time
from typing import Any

import httpx

from graphsim.fixture import GROUPS_ADMIN_CLIENT_ID
from graphsim.server import SimServer
from tests.graphsim.helpers import (
    SKU,
    ClockedSim,
    assign_body,
    bind,
    free_users,
    graph_client,
    licensed_user,
    new_group,
    processing_state,
    states,
    trust,
)

INHERITED = "User license is inherited from a group membership and it cannot be removed directly from the user."


def _license_group(admin: httpx.Client, group_id: str, add: list[str] | None = None,
                   remove: list[str] | None = None, disabled: list[str] | None = None) -> httpx.Response:
    return admin.post(f"/groups/{group_id}/assignLicense", json=assign_body(add, remove, disabled))


def _consumed(control: httpx.Client, part: str) -> int:
    sku = next(s for s in control.get("/skus").json()["value"] if s["skuPartNumber"] == part)
    consumed: int = sku["consumedUnits"]
    return consumed


def _skus(client: httpx.Client, user: str) -> dict[str, list[str]]:
    body = client.get(f"/users/{user}?$select=assignedLicenses").json()
    return {a["skuId"]: a["disabledPlans"] for a in body["assignedLicenses"]}


def _group_states(client: httpx.Client, user: str, group_id: str) -> list[tuple[str, str, str]]:
    return [(s["skuId"], s["state"], s["error"]) for s in states(client, user) if s["assignedByGroup"] == group_id]


def _plan(sim: SimServer, part: str, name: str) -> str:
    return next(p.plan_id for p in sim.state.sku_by_part(part).plans if p.name == name)


def test_group_license_is_accepted_then_processed_after_the_delay(clocked: ClockedSim) -> None:
    server, clock = clocked.server, clocked.clock
    assert clocked.control.post("/config", json={"group_license_delay_s": 10}).status_code == 200
    with graph_client(server, trust(server), GROUPS_ADMIN_CLIENT_ID) as admin:
        group_id = new_group(admin)
        users = [u.id for u in server.state.user_order if u.usage_location and not u.licenses][:2]
        assert admin.patch(f"/groups/{group_id}", json=bind(*users)).status_code == 204
        before = _consumed(clocked.control, "EMS")
        accepted = _license_group(admin, group_id, ["EMS"])
        assert accepted.status_code == 202
        assert accepted.json()["id"] == group_id and accepted.headers["location"].endswith(
            f"/directoryObjects/{group_id}/Microsoft.DirectoryServices.Group")
        # The group has the license at once; its members get it only when the group is processed.
        selected = admin.get(f"/groups/{group_id}?$select=assignedLicenses").json()
        assert selected["assignedLicenses"] == [{"disabledPlans": [], "skuId": SKU["EMS"]}]
        assert processing_state(admin, group_id) == "QueuedForProcessing"
        assert states(clocked.graph, users[0]) == [] and _consumed(clocked.control, "EMS") == before
        clock.advance(5)
        assert processing_state(admin, group_id) == "ProcessingInProgress"
        assert states(clocked.graph, users[0]) == []
        clock.advance(5)
        assert processing_state(admin, group_id) == "ProcessingComplete"
        for user in users:
            assert _group_states(clocked.graph, user, group_id) == [(SKU["EMS"], "Active", "None")]
            assert _skus(clocked.graph, user) == {SKU["EMS"]: []}
        assert _consumed(clocked.control, "EMS") == before + 2
        run = clocked.control.get(f"/groups/{group_id}").json()["lastProcessing"]
        assert (run["usersSucceeded"], run["usersFailed"]) == (2, 0)


def test_membership_changes_are_processed_the_same_way(clocked: ClockedSim) -> None:
    server, clock = clocked.server, clocked.clock
    assert clocked.control.post("/config", json={"group_license_delay_s": 4}).status_code == 200
    with graph_client(server, trust(server), GROUPS_ADMIN_CLIENT_ID) as admin:
        group_id = new_group(admin)
        first, second = [u.id for u in server.state.user_order if u.usage_location and not u.licenses][:2]
        assert admin.patch(f"/groups/{group_id}", json=bind(first)).status_code == 204
        assert _license_group(admin, group_id, ["EMS"]).status_code == 202
        clock.advance(4)
        assert processing_state(admin, group_id) == "ProcessingComplete"
        before = _consumed(clocked.control, "EMS")
        # A new member gains, a removed member loses, both when the group is processed again.
        assert admin.patch(f"/groups/{group_id}", json=bind(second)).status_code == 204
        assert admin.delete(f"/groups/{group_id}/members/{first}/$ref").status_code == 204
        assert processing_state(admin, group_id) == "QueuedForProcessing"
        assert _skus(clocked.graph, first) == {SKU["EMS"]: []} and _skus(clocked.graph, second) == {}
        clock.advance(4)
        assert processing_state(admin, group_id) == "ProcessingComplete"
        assert _skus(clocked.graph, first) == {} and states(clocked.graph, first) == []
        assert _skus(clocked.graph, second) == {SKU["EMS"]: []}
        assert _consumed(clocked.control, "EMS") == before


def test_zero_delay_processes_on_the_next_request(sim: SimServer, admin: httpx.Client, graph: httpx.Client) -> None:
    group_id = new_group(admin)
    user = free_users(sim, 1)[0]
    assert admin.patch(f"/groups/{group_id}", json=bind(user)).status_code == 204
    requests: list[dict[str, Any]] = [
        {"id": "license", "method": "POST", "url": f"/groups/{group_id}/assignLicense",
         "headers": {"Content-Type": "application/json"}, "body": assign_body(["EMS"])},
        {"id": "read", "method": "GET", "url": f"/users/{user}?$select=assignedLicenses", "dependsOn": ["license"]},
    ]
    responses = {r["id"]: r for r in admin.post("/$batch", json={"requests": requests}).json()["responses"]}
    assert responses["license"]["status"] == 202
    assert responses["read"]["body"]["assignedLicenses"] == [{"disabledPlans": [], "skuId": SKU["EMS"]}]
    assert processing_state(graph, group_id) == "ProcessingComplete"


def test_a_short_real_delay_completes(sim: SimServer, admin: httpx.Client, graph: httpx.Client,
                                      control: httpx.Client) -> None:
    assert control.post("/config", json={"group_license_delay_s": 0.2}).status_code == 200
    group_id = new_group(admin)
    user = free_users(sim, 1)[0]
    assert admin.patch(f"/groups/{group_id}", json=bind(user)).status_code == 204
    assert _license_group(admin, group_id, ["POWER_BI_PRO"]).status_code == 202
    deadline = time.monotonic() + 10
    while processing_state(graph, group_id) != "ProcessingComplete":
        assert time.monotonic() < deadline, "the group was not processed within 10 s"
        time.sleep(0.02)
    assert _skus(graph, user) == {SKU["POWER_BI_PRO"]: []}


def test_one_seat_per_user_and_sku_however_held(sim: SimServer, admin: httpx.Client, graph: httpx.Client,
                                                control: httpx.Client) -> None:
    user = licensed_user(sim, "ENTERPRISEPACK")
    before = _consumed(control, "ENTERPRISEPACK")
    groups = [new_group(admin, "E3 a"), new_group(admin, "E3 b")]
    for group_id in groups:
        assert admin.patch(f"/groups/{group_id}", json=bind(user)).status_code == 204
        assert _license_group(admin, group_id, ["ENTERPRISEPACK"]).status_code == 202
    rows = states(graph, user)
    assert [(s["assignedByGroup"], s["state"]) for s in rows if s["skuId"] == SKU["ENTERPRISEPACK"]] == [
        (None, "Active"), (groups[0], "Active"), (groups[1], "Active")]
    held = graph.get(f"/users/{user}?$select=assignedLicenses").json()["assignedLicenses"]
    assert [a["skuId"] for a in held].count(SKU["ENTERPRISEPACK"]) == 1  # one entry per SKU
    assert _consumed(control, "ENTERPRISEPACK") == before
    # Removing the direct assignment leaves the inherited ones, and the seat.
    assert graph.post(f"/users/{user}/assignLicense", json=assign_body(remove=["ENTERPRISEPACK"])).status_code == 200
    assert SKU["ENTERPRISEPACK"] in _skus(graph, user) and _consumed(control, "ENTERPRISEPACK") == before
    # Leaving one group keeps it; leaving the last gives the seat back.
    assert admin.delete(f"/groups/{groups[0]}/members/{user}/$ref").status_code == 204
    assert SKU["ENTERPRISEPACK"] in _skus(graph, user) and _consumed(control, "ENTERPRISEPACK") == before
    assert admin.delete(f"/groups/{groups[1]}/members/{user}/$ref").status_code == 204
    assert _skus(graph, user).get(SKU["ENTERPRISEPACK"]) is None
    assert _consumed(control, "ENTERPRISEPACK") == before - 1


def test_inherited_only_license_cannot_be_removed_directly(sim: SimServer, admin: httpx.Client,
                                                           graph: httpx.Client, control: httpx.Client) -> None:
    group_id = new_group(admin)
    user = free_users(sim, 1)[0]
    assert admin.patch(f"/groups/{group_id}", json=bind(user)).status_code == 204
    assert _license_group(admin, group_id, ["EMS"]).status_code == 202
    before = _consumed(control, "EMS")
    refused = graph.post(f"/users/{user}/assignLicense", json=assign_body(remove=["EMS"]))
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "Request_BadRequest"
    assert refused.json()["error"]["message"] == INHERITED
    assert _skus(graph, user) == {SKU["EMS"]: []} and _consumed(control, "EMS") == before
    # A direct add of a SKU a group already gives takes no seat, and can then be removed.
    assert graph.post(f"/users/{user}/assignLicense", json=assign_body(["EMS"])).status_code == 200
    assert [s["assignedByGroup"] for s in states(graph, user)] == [None, group_id]
    assert _consumed(control, "EMS") == before
    assert graph.post(f"/users/{user}/assignLicense", json=assign_body(remove=["EMS"])).status_code == 200
    assert _consumed(control, "EMS") == before


def test_no_seat_means_count_violation_and_nothing_consumed(sim: SimServer, admin: httpx.Client,
                                                            graph: httpx.Client, control: httpx.Client) -> None:
    consumed = _consumed(control, "VISIOCLIENT")
    assert control.patch("/skus/VISIOCLIENT", json={"enabled": consumed}).status_code == 200
    group_id = new_group(admin)
    users = free_users(sim, 2)
    assert admin.patch(f"/groups/{group_id}", json=bind(*users)).status_code == 204
    # One unavailable product blocks the group's other products for that user too.
    assert _license_group(admin, group_id, ["EMS", "VISIOCLIENT"]).status_code == 202
    ems = _consumed(control, "EMS")
    for user in users:
        assert _group_states(graph, user, group_id) == [(SKU["EMS"], "Error", "CountViolation"),
                                                         (SKU["VISIOCLIENT"], "Error", "CountViolation")]
        assert _skus(graph, user) == {}
    assert _consumed(control, "VISIOCLIENT") == consumed
    errors = admin.get(f"/groups/{group_id}/membersWithLicenseErrors?$select=id").json()["value"]
    assert [m["id"] for m in errors] == users
    flagged = admin.get("/groups?$filter=hasMembersWithLicenseErrors eq true&$select=id").json()["value"]
    assert [g["id"] for g in flagged] == [group_id]
    # Buying a seat does not help by itself; reprocessing the user does.
    assert control.patch("/skus/VISIOCLIENT", json={"enabled": consumed + 1}).status_code == 200
    assert _group_states(graph, users[0], group_id)[1] == (SKU["VISIOCLIENT"], "Error", "CountViolation")
    reprocessed = graph.post(f"/users/{users[0]}/reprocessLicenseAssignment")
    assert reprocessed.status_code == 200 and reprocessed.json()["id"] == users[0]
    assert _group_states(graph, users[0], group_id) == [(SKU["EMS"], "Active", "None"),
                                                         (SKU["VISIOCLIENT"], "Active", "None")]
    assert _consumed(control, "VISIOCLIENT") == consumed + 1 and _consumed(control, "EMS") == ems + 1
    assert graph.post(f"/users/{users[1]}/reprocessLicenseAssignment").status_code == 200
    assert _group_states(graph, users[1], group_id)[1] == (SKU["VISIOCLIENT"], "Error", "CountViolation")
    remaining = admin.get(f"/groups/{group_id}/membersWithLicenseErrors").json()["value"]
    assert [m["id"] for m in remaining] == [users[1]]
    assert remaining[0]["@odata.type"] == "#microsoft.graph.user"


def test_mutually_exclusive_plans(sim: SimServer, admin: httpx.Client, graph: httpx.Client,
                                  control: httpx.Client) -> None:
    user = licensed_user(sim, "ENTERPRISEPACK")
    before = _consumed(control, "STANDARDPACK")
    group_id = new_group(admin)
    assert admin.patch(f"/groups/{group_id}", json=bind(user)).status_code == 204
    assert _license_group(admin, group_id, ["STANDARDPACK"]).status_code == 202
    assert _group_states(graph, user, group_id) == [(SKU["STANDARDPACK"], "Error", "MutuallyExclusiveViolation")]
    assert _consumed(control, "STANDARDPACK") == before
    # The other way round: a direct add that clashes with a group-held license is refused at once.
    other = free_users(sim, 1)[0]
    e3_group = new_group(admin, "E3")
    assert admin.patch(f"/groups/{e3_group}", json=bind(other)).status_code == 204
    assert _license_group(admin, e3_group, ["ENTERPRISEPACK"]).status_code == 202
    clash = graph.post(f"/users/{other}/assignLicense", json=assign_body(["STANDARDPACK"]))
    assert clash.status_code == 400 and "mutually exclusive" in clash.json()["error"]["message"]


def test_usage_location_for_group_licenses(sim: SimServer, admin: httpx.Client, graph: httpx.Client) -> None:
    no_location = licensed_user(sim, None, location=False)
    located = free_users(sim, 1)[0]
    group_id = new_group(admin)
    assert admin.patch(f"/groups/{group_id}", json=bind(no_location, located)).status_code == 204
    assert _license_group(admin, group_id, ["EMS"]).status_code == 202
    # Without a usageLocation the directory's country is used (a direct assignment would be refused).
    assert _group_states(graph, no_location, group_id) == [(SKU["EMS"], "Active", "None")]
    assert graph.get(f"/users/{no_location}?$select=usageLocation").json()["usageLocation"] is None
    # A location where the services may not be used: the assignment held stays, with an error.
    assert graph.patch(f"/users/{located}", json={"usageLocation": "CU"}).status_code == 204
    assert graph.post(f"/users/{located}/reprocessLicenseAssignment").status_code == 200
    assert _group_states(graph, located, group_id) == [
        (SKU["EMS"], "ActiveWithError", "ProhibitedInUsageLocationViolation")]
    assert SKU["EMS"] in _skus(graph, located)
    newcomer = free_users(sim, 1)[0]
    assert graph.patch(f"/users/{newcomer}", json={"usageLocation": "KP"}).status_code == 204
    assert admin.patch(f"/groups/{group_id}", json=bind(newcomer)).status_code == 204
    assert _group_states(graph, newcomer, group_id) == [(SKU["EMS"], "Error", "ProhibitedInUsageLocationViolation")]
    assert _skus(graph, newcomer) == {}


def test_disabled_plans_of_all_assignments_combine(sim: SimServer, admin: httpx.Client,
                                                   graph: httpx.Client) -> None:
    sway, yammer = _plan(sim, "ENTERPRISEPACK", "SWAY"), _plan(sim, "ENTERPRISEPACK", "YAMMER_ENTERPRISE")
    user = free_users(sim, 1)[0]
    assert graph.post(f"/users/{user}/assignLicense",
                      json=assign_body(["ENTERPRISEPACK"], disabled=[sway, yammer])).status_code == 200
    group_id = new_group(admin)
    assert admin.patch(f"/groups/{group_id}", json=bind(user)).status_code == 204
    assert _license_group(admin, group_id, ["ENTERPRISEPACK"], disabled=[sway]).status_code == 202
    # A plan stays disabled only where every assignment disables it.
    assert _skus(graph, user) == {SKU["ENTERPRISEPACK"]: [sway]}
    details = graph.get(f"/users/{user}/licenseDetails").json()["value"]
    status = {p["servicePlanName"]: p["provisioningStatus"] for p in details[0]["servicePlans"]}
    assert status["SWAY"] == "Disabled" and status["YAMMER_ENTERPRISE"] == "Success"
    # Changing the group's disabled plans reaches the member on processing.
    assert _license_group(admin, group_id, ["ENTERPRISEPACK"]).status_code == 202
    assert _skus(graph, user) == {SKU["ENTERPRISEPACK"]: []}


def test_license_details_include_inherited_licenses(sim: SimServer, admin: httpx.Client,
                                                    graph: httpx.Client) -> None:
    user = free_users(sim, 1)[0]
    group_id = new_group(admin)
    assert admin.patch(f"/groups/{group_id}", json=bind(user)).status_code == 204
    assert _license_group(admin, group_id, ["POWER_BI_PRO"]).status_code == 202
    details = graph.get(f"/users/{user}/licenseDetails").json()["value"]
    assert [d["skuPartNumber"] for d in details] == ["POWER_BI_PRO"]
    filtered = graph.get(f"/users?$filter=assignedLicenses/any(x:x/skuId eq {SKU['POWER_BI_PRO']})"
                         "&$select=id,licenseAssignmentStates&$top=999").json()["value"]
    listed = next(u for u in filtered if u["id"] == user)
    assert [(s["assignedByGroup"], s["state"]) for s in listed["licenseAssignmentStates"]] == [(group_id, "Active")]


def test_removing_a_group_license_and_deleting_the_group(sim: SimServer, admin: httpx.Client,
                                                         graph: httpx.Client, control: httpx.Client) -> None:
    group_id = new_group(admin)
    users = free_users(sim, 3)
    assert admin.patch(f"/groups/{group_id}", json=bind(*users)).status_code == 204
    before = _consumed(control, "EMS")
    assert _license_group(admin, group_id, ["EMS"]).status_code == 202
    assert _consumed(control, "EMS") == before + 3
    refused = admin.delete(f"/groups/{group_id}")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "Request_BadRequest"
    assert _license_group(admin, group_id, remove=["EMS"]).status_code == 202
    assert all(_skus(graph, u) == {} and states(graph, u) == [] for u in users)
    assert _consumed(control, "EMS") == before
    assert admin.delete(f"/groups/{group_id}").status_code == 204


def test_group_assign_license_validation(sim: SimServer, admin: httpx.Client) -> None:
    group_id = new_group(admin)
    missing = admin.post(f"/groups/{group_id}/assignLicense", json={"addLicenses": []})
    assert missing.status_code == 400
    assert missing.json()["error"]["message"] == ("One or more parameters of the operation 'assignLicense' are "
                                                 "missing from the request payload. The missing parameters are: "
                                                 "removeLicenses.")
    assert _license_group(admin, group_id).status_code == 400  # nothing to add or remove
    unknown = admin.post(f"/groups/{group_id}/assignLicense",
                         json={"addLicenses": [{"skuId": "00000000-0000-4000-8000-000000000001"}],
                               "removeLicenses": []})
    assert unknown.status_code == 400 and "valid company License" in unknown.json()["error"]["message"]
    assert _license_group(admin, group_id, ["WINDOWS_STORE"]).status_code == 400  # a company-wide SKU
    assert _license_group(admin, group_id, remove=["EMS"]).status_code == 400  # not on the group
    assert admin.post("/groups/00000000-0000-4000-8000-000000000000/assignLicense",
                      json=assign_body(["EMS"])).status_code == 404
    assert sim.state.find_group(group_id) is not None and sim.state.find_group(group_id).licenses == {}  # type: ignore[union-attr]


def test_nested_groups_get_no_licenses(sim: SimServer, admin: httpx.Client, graph: httpx.Client) -> None:
    outer, inner = new_group(admin, "Outer"), new_group(admin, "Inner")
    direct_member, nested_member = free_users(sim, 2)
    assert admin.patch(f"/groups/{inner}", json=bind(nested_member)).status_code == 204
    body = {"members@odata.bind": [f"https://graph.microsoft.com/v1.0/groups/{inner}",
                                   f"https://graph.microsoft.com/v1.0/users/{direct_member}"]}
    assert admin.patch(f"/groups/{outer}", json=body).status_code == 204
    assert _license_group(admin, outer, ["EMS"]).status_code == 202
    assert _skus(graph, direct_member) == {SKU["EMS"]: []}
    assert _skus(graph, nested_member) == {}


def test_changes_while_pending_join_the_pending_run(clocked: ClockedSim) -> None:
    server, clock = clocked.server, clocked.clock
    assert clocked.control.post("/config", json={"group_license_delay_s": 10}).status_code == 200
    with graph_client(server, trust(server), GROUPS_ADMIN_CLIENT_ID) as admin:
        group_id = new_group(admin)
        first, late = [u.id for u in server.state.user_order if u.usage_location and not u.licenses][:2]
        assert admin.patch(f"/groups/{group_id}", json=bind(first)).status_code == 204
        assert _license_group(admin, group_id, ["EMS"]).status_code == 202
        clock.advance(6)
        assert processing_state(admin, group_id) == "ProcessingInProgress"
        assert admin.patch(f"/groups/{group_id}", json=bind(late)).status_code == 204
        clock.advance(3.9)
        assert processing_state(admin, group_id) == "ProcessingInProgress"
        assert _skus(clocked.graph, first) == {} and _skus(clocked.graph, late) == {}
        clock.advance(0.1)
        assert processing_state(admin, group_id) == "ProcessingComplete"
        assert _skus(clocked.graph, first) == _skus(clocked.graph, late) == {SKU["EMS"]: []}
        # The next change starts a new run with its own delay.
        assert admin.delete(f"/groups/{group_id}/members/{late}/$ref").status_code == 204
        assert processing_state(admin, group_id) == "QueuedForProcessing"
        clock.advance(10)
        assert _skus(clocked.graph, late) == {}
