"""Users' lifecycle and sign-in attributes: generated spread, $select-only, signInActivity's rules, control."""

from __future__ import annotations

import datetime as dt
import ssl
import time
from typing import Any

import httpx
import pytest

from graphsim.fixture import READONLY_CLIENT_ID, build_fixture
from graphsim.lifecycle import SUCCESSFUL_SIGN_IN_SINCE, iso
from graphsim.server import SimServer
from graphsim.tenant import Tenant
from tests.graphsim.helpers import graph_client

NO_AUDIT_LOG = "Calling principal does not have required MSGraph permissions AuditLog.Read.All"
NOT_PREMIUM = "Neither tenant is B2C or tenant doesn't have premium license"
DAY_S = 86400.0


def _all(client: httpx.Client, url: str) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        body = client.get(next_url).json()
        assert "value" in body, body
        users += body["value"]
        next_url = body.get("@odata.nextLink")
    return users


def _error(response: httpx.Response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    assert (response.json()["error"]["code"], response.json()["error"]["message"]) == (code, message)


def test_lifecycle_attributes_are_deterministic_and_spread() -> None:
    assert build_fixture(1000, 7).users == build_fixture(1000, 7).users
    assert [u.lifecycle for u in build_fixture(300, 7).users] != [u.lifecycle for u in build_fixture(300, 8).users]
    now = time.time()
    users = Tenant(build_fixture(2000, 1), now).user_order
    never = [u for u in users if u.sign_in is None]
    last = [now - u.sign_in.last_successful for u in users if u.sign_in and u.sign_in.last_successful]
    assert 0.03 < len(never) / len(users) < 0.12
    assert 0.55 < sum(1 for age in last if age <= 14 * DAY_S) / len(users) < 0.85  # most sign in recently
    assert 0.08 < sum(1 for age in last if age > 90 * DAY_S) / len(users) < 0.25  # some not for months
    assert 0.005 < sum(1 for u in users if not u.account_enabled) / len(users) < 0.06
    assert 0.03 < sum(1 for u in users if now - u.created < 60 * DAY_S) / len(users) < 0.1
    assert any(u.hire is not None and u.hire > now for u in users)  # hired, not started yet
    assert any(u.leave is not None and u.leave < now for u in users)
    # Last seen before lastSuccessfulSignInDateTime existed: only that one is null.
    legacy = [u for u in users if u.sign_in and u.sign_in.last_successful is None]
    assert legacy and all(u.sign_in and u.sign_in.last and u.sign_in.last < SUCCESSFUL_SIGN_IN_SINCE.timestamp()
                          for u in legacy)
    for u in users:  # nobody signs in before the account exists
        assert u.sign_in is None or all(t is None or t >= u.created for t in u.sign_in), u


def test_lifecycle_does_not_change_the_generated_users() -> None:
    plain = build_fixture(500, 3).users
    with_groups = build_fixture(500, 3, group_licensed_share=0.3).users
    assert plain == with_groups
    assert [(u.id, u.upn, u.usage_location) for u in plain][:3] == [
        (u.id, u.upn, u.usage_location) for u in build_fixture(3, 3).users]


def test_new_properties_are_returned_only_on_select(sim: SimServer, graph: httpx.Client) -> None:
    user = next(u for u in sim.state.user_order if u.sign_in is not None and u.hire is not None)
    default = graph.get(f"/users/{user.id}").json()
    for name in ("createdDateTime", "employeeHireDate", "employeeLeaveDateTime", "signInActivity", "accountEnabled"):
        assert name not in default
    listed = graph.get("/users?$top=3").json()["value"][0]
    assert "signInActivity" not in listed and "createdDateTime" not in listed
    selected = graph.get(f"/users/{user.id}?$select=createdDateTime,employeeHireDate,employeeLeaveDateTime,"
                         "accountEnabled,signInActivity").json()
    assert selected["createdDateTime"] == iso(user.created) and selected["employeeHireDate"] == iso(user.hire)
    assert selected["employeeHireDate"].endswith("T00:00:00Z")  # a date
    assert selected["employeeLeaveDateTime"] == iso(user.leave) and selected["accountEnabled"] is user.account_enabled
    activity = selected["signInActivity"]
    assert activity["lastSuccessfulSignInDateTime"] == iso(user.sign_in.last_successful)
    assert set(activity) == {"lastSignInDateTime", "lastSignInRequestId", "lastNonInteractiveSignInDateTime",
                             "lastNonInteractiveSignInRequestId", "lastSuccessfulSignInDateTime",
                             "lastSuccessfulSignInRequestId"}
    never = next(u for u in sim.state.user_order if u.sign_in is None)
    assert graph.get(f"/users/{never.id}?$select=signInActivity").json()["signInActivity"] is None


def test_sign_in_activity_needs_audit_log_permission_and_premium(sim: SimServer, graph: httpx.Client,
                                                                 control: httpx.Client,
                                                                 tls: ssl.SSLContext) -> None:
    user = sim.state.user_order[0].id
    with graph_client(sim, tls, READONLY_CLIENT_ID) as readonly:
        for url in (f"/users/{user}?$select=signInActivity", "/users?$select=id,signInActivity",
                    "/users?$filter=signInActivity/lastSignInDateTime le 2025-01-01T00:00:00Z"):
            _error(readonly.get(url), 403, "Authentication_MSGraphPermissionMissing", NO_AUDIT_LOG)
        assert readonly.get(f"/users/{user}?$select=createdDateTime").status_code == 200
        batch = readonly.post("/$batch", json={"requests": [
            {"id": "1", "method": "GET", "url": f"/users/{user}?$select=signInActivity"}]}).json()
        assert batch["responses"][0]["status"] == 403
    assert control.post("/config", json={"premium": False}).json()["premium"] is False
    for url in (f"/users/{user}?$select=signInActivity", "/users?$select=signInActivity"):
        _error(graph.get(url), 403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant", NOT_PREMIUM)
    assert graph.get(f"/users/{user}?$select=createdDateTime,accountEnabled").status_code == 200
    assert control.post("/config", json={"premium": True}).status_code == 200
    assert graph.get(f"/users/{user}?$select=signInActivity").status_code == 200


def test_sign_in_pages_hold_at_most_120_users(sim: SimServer, graph: httpx.Client) -> None:
    _error(graph.get("/users?$select=id,signInActivity&$top=121"), 400, "Request_BadRequest",
           "Cannot query data for more than 120 users at a time.")
    _error(graph.get("/users?$filter=signInActivity/lastSignInDateTime ge 2020-01-01T00:00:00Z&$top=999"), 400,
           "Request_BadRequest", "Cannot query data for more than 120 users at a time.")
    assert len(graph.get("/users?$select=id,signInActivity").json()["value"]) == 100  # the default page
    first = graph.get("/users?$select=id,signInActivity&$top=120")
    assert len(first.json()["value"]) == 120 and first.headers["x-ms-resource-unit"] == "1"
    assert "$select=id,signInActivity" in first.json()["@odata.nextLink"]
    users = _all(graph, "/users?$select=id,signInActivity&$top=120")
    assert [u["id"] for u in users] == [u.id for u in sim.state.user_order]
    assert len(graph.get("/users?$select=id&$top=999").json()["value"]) == 200  # other reads keep 999


def test_sign_in_filter(sim: SimServer, graph: httpx.Client) -> None:
    cutoff = time.time() - 90 * DAY_S
    when = dt.datetime.fromtimestamp(cutoff, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    stale = _all(graph, f"/users?$filter=signInActivity/lastSuccessfulSignInDateTime le {when}"
                        "&$select=id,signInActivity&$top=120")
    expected = [u.id for u in sim.state.user_order
                if u.sign_in and u.sign_in.last_successful is not None and u.sign_in.last_successful <= int(cutoff)]
    assert expected and [u["id"] for u in stale] == expected  # never signed in (null) does not match
    recent = _all(graph, f"/users?$filter=signInActivity/lastSuccessfulSignInDateTime ge {when}&$select=id")
    negated = _all(graph, f"/users?$filter=not(signInActivity/lastSuccessfulSignInDateTime le {when})&$select=id")
    assert {u["id"] for u in recent} <= {u["id"] for u in negated}
    assert len(negated) == 200 - len(stale)
    # signInActivity cannot be combined with another property.
    combined = graph.get(f"/users?$filter=signInActivity/lastSignInDateTime le {when} and accountEnabled eq true")
    _error(combined, 400, "Request_UnsupportedQuery", "Unsupported Query.")
    assert graph.get("/users?$filter=signInActivity/nope le 2020-01-01T00:00:00Z").status_code == 400


def test_account_and_creation_filters(sim: SimServer, graph: httpx.Client) -> None:
    disabled = _all(graph, "/users?$filter=accountEnabled eq false&$select=id,accountEnabled&$top=999")
    assert [u["id"] for u in disabled] == [u.id for u in sim.state.user_order if not u.account_enabled]
    assert disabled and all(u["accountEnabled"] is False for u in disabled)
    since = time.time() - 60 * DAY_S
    when = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = _all(graph, f"/users?$filter=createdDateTime ge {when} and accountEnabled eq true&$select=id")
    assert [u["id"] for u in recent] == [u.id for u in sim.state.user_order
                                         if u.created >= int(since) and u.account_enabled]
    assert recent
    hired = _all(graph, f"/users?$filter=employeeHireDate gt {iso(time.time())}&$select=id,employeeHireDate")
    assert [u["id"] for u in hired] == [u.id for u in sim.state.user_order if u.hire and u.hire > time.time()]


def test_control_sets_lifecycle_attributes(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    user = sim.state.user_order[5]
    response = control.patch(f"/users/{user.upn}", json={"signedInDaysAgo": 200, "accountEnabled": False,
                                                         "createdDaysAgo": 400, "employeeLeaveDateTime": None,
                                                         "employeeHireDate": "2024-03-01"})
    assert response.status_code == 200
    view = response.json()
    assert view["accountEnabled"] is False and view["employeeHireDate"] == "2024-03-01T00:00:00Z"
    selected = graph.get(f"/users/{user.id}?$select=signInActivity,accountEnabled,createdDateTime").json()
    last = dt.datetime.fromisoformat(selected["signInActivity"]["lastSuccessfulSignInDateTime"].replace("Z", "+00:00"))
    assert 199.9 < (time.time() - last.timestamp()) / DAY_S < 200.1
    assert selected["accountEnabled"] is False
    partial = control.patch(f"/users/{user.id}", json={"signInActivity": {
        "lastSignInDateTime": "2026-01-02T03:04:05Z"}}).json()["signInActivity"]
    assert partial["lastSignInDateTime"] == "2026-01-02T03:04:05Z"
    assert partial["lastSuccessfulSignInDateTime"] == selected["signInActivity"]["lastSuccessfulSignInDateTime"]
    assert control.patch(f"/users/{user.id}", json={"signInActivity": None}).json()["signInActivity"] is None
    for bad in ({"signedInDaysAgo": -1}, {"accountEnabled": "no"}, {"createdDateTime": "yesterday"},
                {"signInActivity": {"lastLogon": "2026-01-01"}}, {"colour": "red"}):
        assert control.patch(f"/users/{user.id}", json=bad).status_code == 400, bad
    assert control.patch("/users/nobody@contoso.example", json={"accountEnabled": True}).status_code == 404
    assert control.get(f"/users/{user.id}").json()["accountEnabled"] is False  # nothing half-applied


@pytest.mark.parametrize(("body", "status"), [
    ({"employeeHireDate": "2027-01-04T00:00:00Z"}, 204),
    ({"employeeHireDate": None}, 204),
    ({"employeeHireDate": "soon"}, 400),
    ({"employeeLeaveDateTime": "2027-01-04T00:00:00Z"}, 403),  # needs User-LifeCycleInfo.ReadWrite.All
    ({"createdDateTime": "2020-01-01T00:00:00Z"}, 400),  # read-only
])
def test_graph_patch_of_lifecycle_attributes(sim: SimServer, graph: httpx.Client, body: dict[str, Any],
                                             status: int) -> None:
    user = sim.state.user_order[7]
    assert graph.patch(f"/users/{user.id}", json=body).status_code == status
    if status == 204:
        value = graph.get(f"/users/{user.id}?$select=employeeHireDate").json()["employeeHireDate"]
        assert value == body["employeeHireDate"]
