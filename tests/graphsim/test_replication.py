"""Replication lag: new users Graph does not see yet, and a usageLocation assignLicense sees late."""

from __future__ import annotations

from typing import Any

import httpx

from tests.graphsim.helpers import SKU, ClockedSim, assign_body

NOT_FOUND = "Resource '{}' does not exist or one of its queried reference-property objects are not present."
INVALID_LOCATION = "License assignment cannot be done for user with invalid usage location."


def _assert_not_found(response: httpx.Response, key: str) -> None:
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["code"] == "Request_ResourceNotFound" and error["message"] == NOT_FOUND.format(key)


def _new_user(clocked: ClockedSim, upn: str, **fields: Any) -> dict[str, Any]:
    response = clocked.control.post("/users", json={"userPrincipalName": upn, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_new_user_is_invisible_to_graph_until_replicated(clocked: ClockedSim) -> None:
    graph = clocked.graph
    created = _new_user(clocked, "late@contoso.example", usageLocation="NL", visible_after_s=30)
    uid, upn = created["id"], created["userPrincipalName"]
    assert created["usageLocation"] == "NL" and created["assignedLicenses"] == []
    assert clocked.control.get(f"/users/{upn}").json()["id"] == uid  # the control surface sees it at once

    _assert_not_found(graph.get(f"/users/{uid}"), uid)
    _assert_not_found(graph.get(f"/users/{upn}"), upn)
    _assert_not_found(graph.get(f"/users/{uid}/licenseDetails"), uid)
    _assert_not_found(graph.patch(f"/users/{uid}", json={"jobTitle": "Analyst"}), uid)
    _assert_not_found(graph.post(f"/users/{uid}/assignLicense", json=assign_body(["EMS"])), uid)
    listed = graph.get("/users?$top=999&$select=id").json()["value"]
    assert uid not in {u["id"] for u in listed} and len(listed) == 60
    filtered = graph.get(f"/users?$filter=userPrincipalName eq '{upn}'").json()["value"]
    assert filtered == []
    batch = graph.post("/$batch", json={"requests": [{"id": "1", "method": "GET", "url": f"/users/{uid}"}]})
    assert batch.json()["responses"][0]["status"] == 404
    assert clocked.server.state.users[uid].licenses == {}

    clocked.clock.advance(29.5)
    _assert_not_found(graph.get(f"/users/{uid}"), uid)
    clocked.clock.advance(0.5)
    assert graph.get(f"/users/{upn}").json()["id"] == uid
    assert uid in {u["id"] for u in graph.get("/users?$top=999&$select=id").json()["value"]}
    assert graph.post(f"/users/{uid}/assignLicense", json=assign_body(["EMS"])).status_code == 200
    assert SKU["EMS"] in clocked.server.state.users[uid].licenses


def test_new_user_without_lag_is_visible_at_once_and_reset_removes_it(clocked: ClockedSim) -> None:
    created = _new_user(clocked, "now@contoso.example")
    assert created["usageLocation"] is None and created["visible_after_s"] == 0
    assert clocked.graph.get(f"/users/{created['id']}").status_code == 200
    clocked.control.post("/reset")
    _assert_not_found(clocked.graph.get(f"/users/{created['id']}"), created["id"])
    assert clocked.control.get("/users/now@contoso.example").status_code == 404


def test_new_user_validation(clocked: ClockedSim) -> None:
    control = clocked.control
    taken = clocked.server.state.user_order[0].upn
    assert control.post("/users", json={"userPrincipalName": taken.upper()}).status_code == 409
    for bad in ({}, {"userPrincipalName": "no-at-sign"}, {"userPrincipalName": "a@b", "usageLocation": "XX"},
                {"userPrincipalName": "a@b", "visible_after_s": -1}, {"userPrincipalName": "a@b", "id": "x"}):
        response = control.post("/users", json=bad)
        assert response.status_code == 400 and "error" in response.json()
    assert control.post("/users", content=b"[1]").status_code == 400
    assert len(control.get("/users").json()["value"]) == 60


def test_assign_license_sees_the_previous_usage_location_while_replicating(clocked: ClockedSim) -> None:
    graph, control = clocked.graph, clocked.control
    control.post("/config", json={"replication_lag_s": 5})
    user = next(u for u in clocked.server.state.user_order if u.usage_location is None)
    assert graph.patch(f"/users/{user.id}", json={"usageLocation": "NL"}).status_code == 204
    # Reads see the new value; the assignment still sees none.
    assert graph.get(f"/users/{user.id}?$select=usageLocation").json()["usageLocation"] == "NL"
    refused = graph.post(f"/users/{user.id}/assignLicense", json=assign_body(["EMS"]))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "Request_BadRequest" and error["message"] == INVALID_LOCATION
    assert user.licenses == {}
    clocked.clock.advance(4.5)
    assert graph.post(f"/users/{user.id}/assignLicense", json=assign_body(["EMS"])).status_code == 400
    clocked.clock.advance(0.5)
    assert graph.post(f"/users/{user.id}/assignLicense", json=assign_body(["EMS"])).status_code == 200


def test_changing_a_valid_usage_location_does_not_block_assignment(clocked: ClockedSim) -> None:
    graph, control = clocked.graph, clocked.control
    control.post("/config", json={"replication_lag_s": 5})
    user = next(u for u in clocked.server.state.user_order if u.usage_location and not u.licenses)
    assert graph.patch(f"/users/{user.id}", json={"usageLocation": "JP"}).status_code == 204
    assert graph.post(f"/users/{user.id}/assignLicense", json=assign_body(["EMS"])).status_code == 200


def test_without_lag_a_fresh_usage_location_counts_at_once(clocked: ClockedSim) -> None:
    graph = clocked.graph
    assert clocked.control.get("/config").json()["replication_lag_s"] == 0
    user = next(u for u in clocked.server.state.user_order if u.usage_location is None)
    assert graph.patch(f"/users/{user.id}", json={"usageLocation": "NL"}).status_code == 204
    assert graph.post(f"/users/{user.id}/assignLicense", json=assign_body(["EMS"])).status_code == 200
