"""assignLicense: every refusal with Graph's exact status and body, seat accounting, atomicity."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import httpx
import pytest

from graphsim.server import SimServer
from tests.graphsim.helpers import SKU, assign_body, licensed_user

INNER_KEYS = {"date", "request-id", "client-request-id"}


def _assert_error(response: httpx.Response, status: int, code: str, message: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "innerError"}
    assert error["code"] == code
    assert set(error["innerError"]) == INNER_KEYS
    if message is not None:
        assert error["message"] == message
    return error


def test_success_returns_user_and_counts_seat(sim: SimServer, graph: httpx.Client) -> None:
    user = licensed_user(sim, None)
    before = sim.state.free_seats("SPE_E3")
    response = graph.post(f"/users/{user}/assignLicense", json=assign_body(["SPE_E3"]))
    assert response.status_code == 200
    assert response.json()["id"] == user
    assert "userPrincipalName" in response.json()
    assert sim.state.free_seats("SPE_E3") == before - 1
    assert SKU["SPE_E3"] in sim.state.users[user].licenses
    # Assigning it again changes nothing (no second seat).
    assert graph.post(f"/users/{user}/assignLicense", json=assign_body(["SPE_E3"])).status_code == 200
    assert sim.state.free_seats("SPE_E3") == before - 1


def test_by_upn_and_readd_replaces_disabled_plans(sim: SimServer, graph: httpx.Client) -> None:
    user = sim.state.users[licensed_user(sim, None)]
    sway = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
    assert graph.post(f"/users/{user.upn}/assignLicense", json=assign_body(["ENTERPRISEPACK"], disabled=[sway])
                      ).status_code == 200
    assert user.licenses[SKU["ENTERPRISEPACK"]] == (sway,)
    assert graph.post(f"/users/{user.upn.upper()}/assignLicense", json=assign_body(["ENTERPRISEPACK"])
                      ).status_code == 200
    assert user.licenses[SKU["ENTERPRISEPACK"]] == ()
    selected = graph.get(f"/users/{user.id}?$select=assignedLicenses").json()
    assert selected["assignedLicenses"] == [{"disabledPlans": [], "skuId": SKU["ENTERPRISEPACK"]}]


def test_remove(sim: SimServer, graph: httpx.Client) -> None:
    user = licensed_user(sim, "ENTERPRISEPACK")
    before = sim.state.free_seats("ENTERPRISEPACK")
    assert graph.post(f"/users/{user}/assignLicense", json=assign_body(remove=["ENTERPRISEPACK"])
                      ).status_code == 200
    assert sim.state.free_seats("ENTERPRISEPACK") == before + 1
    _assert_error(graph.post(f"/users/{user}/assignLicense", json=assign_body(remove=["ENTERPRISEPACK"])),
                  400, "Request_BadRequest", "User does not have a corresponding license.")


@pytest.mark.parametrize("missing", ["addLicenses", "removeLicenses"])
def test_missing_parameter(sim: SimServer, graph: httpx.Client, missing: str) -> None:
    body = assign_body(["SPE_E3"])
    del body[missing]
    _assert_error(graph.post(f"/users/{licensed_user(sim, None)}/assignLicense", json=body), 400,
                  "Request_BadRequest", "One or more parameters of the operation 'assignLicense' are missing from "
                  f"the request payload. The missing parameters are: {missing}.")


def test_user_not_found(graph: httpx.Client) -> None:
    ghost = "00000000-0000-4000-8000-000000000000"
    _assert_error(graph.post(f"/users/{ghost}/assignLicense", json=assign_body(["SPE_E3"])), 404,
                  "Request_ResourceNotFound", f"Resource '{ghost}' does not exist or one of its queried "
                  "reference-property objects are not present.")


def test_unknown_sku(sim: SimServer, graph: httpx.Client) -> None:
    sku = "11111111-1111-4111-8111-111111111111"
    body = {"addLicenses": [{"skuId": sku, "disabledPlans": []}], "removeLicenses": []}
    _assert_error(graph.post(f"/users/{licensed_user(sim, None)}/assignLicense", json=body), 400,
                  "Request_BadRequest", f"License {sku} does not correspond to a valid company License.")


def test_company_sku(sim: SimServer, graph: httpx.Client) -> None:
    _assert_error(graph.post(f"/users/{licensed_user(sim, None)}/assignLicense",
                             json=assign_body(["WINDOWS_STORE"])),
                  400, "Request_BadRequest", f"License {SKU['WINDOWS_STORE']} cannot be assigned to a user.")


def test_no_usage_location(sim: SimServer, graph: httpx.Client) -> None:
    user = licensed_user(sim, None, location=False)
    before = sim.state.free_seats("SPE_E3")
    _assert_error(graph.post(f"/users/{user}/assignLicense", json=assign_body(["SPE_E3"])), 400,
                  "Request_BadRequest", "License assignment cannot be done for user with invalid usage location.")
    assert sim.state.free_seats("SPE_E3") == before
    assert sim.state.users[user].licenses == {}


def test_disabled_plan_not_in_sku(sim: SimServer, graph: httpx.Client) -> None:
    bi = "70d33638-9c74-4d01-bfd3-562de28bd4ba"  # a Power BI plan, not in Office 365 E3
    error = _assert_error(graph.post(f"/users/{licensed_user(sim, None)}/assignLicense",
                                     json=assign_body(["ENTERPRISEPACK"], disabled=[bi])),
                          400, "Request_BadRequest")
    assert bi in error["message"]


def test_mutually_exclusive(sim: SimServer, graph: httpx.Client) -> None:
    user = licensed_user(sim, "ENTERPRISEPACK")
    before = sim.state.free_seats("STANDARDPACK")
    held = set(sim.state.users[user].licenses)
    error = _assert_error(graph.post(f"/users/{user}/assignLicense", json=assign_body(["STANDARDPACK"])), 400,
                          "Request_BadRequest")
    assert "mutually exclusive" in error["message"]
    assert sim.state.free_seats("STANDARDPACK") == before
    assert set(sim.state.users[user].licenses) == held
    # Swapping in one call is fine: both halves happen, and the user's other licenses stay.
    e3_free = sim.state.free_seats("ENTERPRISEPACK")
    assert graph.post(f"/users/{user}/assignLicense", json=assign_body(["STANDARDPACK"], ["ENTERPRISEPACK"])
                      ).status_code == 200
    assert set(sim.state.users[user].licenses) == held - {SKU["ENTERPRISEPACK"]} | {SKU["STANDARDPACK"]}
    assert sim.state.free_seats("STANDARDPACK") == before - 1
    assert sim.state.free_seats("ENTERPRISEPACK") == e3_free + 1


def test_no_free_seat_and_failed_call_changes_nothing(sim: SimServer, graph: httpx.Client) -> None:
    users = [u for u in sim.state.user_order if u.usage_location and not u.licenses][:11]
    for user in users[:10]:
        assert graph.post(f"/users/{user.id}/assignLicense", json=assign_body(["VISIOCLIENT"])).status_code == 200
    assert sim.state.free_seats("VISIOCLIENT") == 0
    # A combined call whose second SKU has no seat fails whole: the first SKU is not assigned either.
    error = _assert_error(graph.post(f"/users/{users[10].id}/assignLicense",
                                     json=assign_body(["POWER_BI_PRO", "VISIOCLIENT"])), 400, "Request_BadRequest")
    assert "does not have any available licenses" in error["message"]
    assert users[10].licenses == {}


def test_50_concurrent_calls_for_the_last_10_seats(sim: SimServer, tls: ssl.SSLContext) -> None:
    assert sim.state.free_seats("VISIOCLIENT") == 10
    users = [u.id for u in sim.state.user_order if u.usage_location and not u.licenses][:50]
    assert len(users) == 50

    async def run() -> list[int]:
        headers = {"Authorization": f"Bearer {sim.issue_token()}"}
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=f"{sim.graph_url}/v1.0", verify=tls, headers=headers,
                                     limits=limits, timeout=30) as client:
            responses = await asyncio.gather(*(
                client.post(f"/users/{u}/assignLicense", json=assign_body(["VISIOCLIENT"])) for u in users))
        return [r.status_code for r in responses]

    statuses = asyncio.run(run())
    assert statuses.count(200) == 10
    assert statuses.count(400) == 40
    assert sim.state.free_seats("VISIOCLIENT") == 0
    assert sim.state.consumed[SKU["VISIOCLIENT"]] == sim.state.sku_by_part("VISIOCLIENT").enabled


def test_bad_json_and_bad_guid(sim: SimServer, graph: httpx.Client) -> None:
    user = licensed_user(sim, None)
    _assert_error(graph.post(f"/users/{user}/assignLicense", content=b"{not json",
                             headers={"Content-Type": "application/json"}), 400, "BadRequest")
    _assert_error(graph.post(f"/users/{user}/assignLicense",
                             json={"addLicenses": [{"skuId": "E3"}], "removeLicenses": []}), 400, "Request_BadRequest")


def test_subscribed_skus_shape(graph: httpx.Client) -> None:
    skus = graph.get("/subscribedSkus").json()["value"]
    e3 = next(s for s in skus if s["skuPartNumber"] == "ENTERPRISEPACK")
    assert e3["skuId"] == SKU["ENTERPRISEPACK"] and e3["appliesTo"] == "User"
    assert set(e3["prepaidUnits"]) == {"enabled", "suspended", "warning", "lockedOut"}
    assert {"servicePlanId", "servicePlanName", "provisioningStatus", "appliesTo"} == set(e3["servicePlans"][0])
    assert e3["capabilityStatus"] == "Enabled" and isinstance(e3["consumedUnits"], int)
    visio = next(s for s in skus if s["skuPartNumber"] == "VISIOCLIENT")
    assert visio["prepaidUnits"]["enabled"] - visio["consumedUnits"] == 10
