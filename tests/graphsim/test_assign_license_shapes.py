"""assignLicense with nothing to change, and the user object v1.0 and /beta answer with."""

from __future__ import annotations

import httpx

from graphsim.server import SimServer
from graphsim.users_api import DEFAULT_USER_PROPERTIES
from tests.graphsim.helpers import SKU, assign_body, licensed_user, trust


def test_both_lists_empty_is_400(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    user = licensed_user(sim, "ENTERPRISEPACK")
    before = dict(sim.state.users[user].licenses)
    response = graph.post(f"/users/{user}/assignLicense", json={"addLicenses": [], "removeLicenses": []})
    assert response.status_code == 400
    assert response.headers["x-ms-resource-unit"] == "1"
    error = response.json()["error"]
    assert error["code"] == "Request_BadRequest"
    assert error["message"] == ("No license changes provided. At least one license to add or remove must be "
                                "specified.")
    assert sim.state.users[user].licenses == before
    assert control.get("/stats").json()["writes_accepted"] == 1  # refused, but it was a write all the same


def test_v1_answers_with_the_default_property_set(sim: SimServer, graph: httpx.Client) -> None:
    user = licensed_user(sim, None)
    body = graph.post(f"/users/{user}/assignLicense", json=assign_body(["EMS"])).json()
    assert set(body) == {"@odata.context", *DEFAULT_USER_PROPERTIES}
    assert "assignedLicenses" not in body


def test_beta_answers_with_the_whole_updated_user(sim: SimServer, graph: httpx.Client) -> None:
    user = sim.state.users[licensed_user(sim, None)]
    response = httpx.post(f"{sim.graph_url}/beta/users/{user.id}/assignLicense", json=assign_body(["EMS"]),
                          headers=graph.headers, verify=trust(sim))
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.context"].endswith("/beta/$metadata#users/$entity")
    assert body["id"] == user.id and body["usageLocation"] == user.usage_location
    assert body["assignedLicenses"] == [{"disabledPlans": [], "skuId": SKU["EMS"]}]
    assert [s["skuId"] for s in body["licenseAssignmentStates"]] == [SKU["EMS"]]
    assert set(DEFAULT_USER_PROPERTIES) < set(body)
