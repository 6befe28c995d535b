"""GET /users paging and $select, GET/PATCH one user."""

from __future__ import annotations

import ssl

import httpx

from graphsim.server import SimServer


def test_paging_with_top_and_next_link(sim: SimServer, graph: httpx.Client) -> None:
    seen: list[str] = []
    url: str | None = "/users?$top=64&$select=id,userPrincipalName"
    pages = 0
    while url:
        body = graph.get(url).json()
        assert all(set(u) == {"id", "userPrincipalName"} for u in body["value"])
        seen += [u["id"] for u in body["value"]]
        url = body.get("@odata.nextLink")
        pages += 1
    assert pages == 4  # 200 users in pages of 64
    assert seen == [u.id for u in sim.state.user_order]


def test_top_bounds(graph: httpx.Client) -> None:
    assert len(graph.get("/users").json()["value"]) == 100  # default page
    assert len(graph.get("/users?$top=999").json()["value"]) == 200
    response = graph.get("/users?$top=1000")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "Request_BadRequest"


def test_select_and_default_properties(sim: SimServer, graph: httpx.Client) -> None:
    user = sim.state.user_order[0]
    default = graph.get(f"/users/{user.upn}").json()
    assert default["id"] == user.id and "usageLocation" not in default and "assignedLicenses" not in default
    selected = graph.get(f"/users/{user.id}?$select=usageLocation,assignedLicenses").json()
    assert set(selected) == {"@odata.context", "usageLocation", "assignedLicenses"}
    bad = graph.get(f"/users/{user.id}?$select=nope")
    assert bad.status_code == 400


def test_get_unknown_user(graph: httpx.Client) -> None:
    response = graph.get("/users/nobody@contoso.example")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "Request_ResourceNotFound"


def test_filter_subset(sim: SimServer, graph: httpx.Client) -> None:
    user = sim.state.user_order[3]
    body = graph.get(f"/users?$filter=userPrincipalName eq '{user.upn}'").json()
    assert [u["id"] for u in body["value"]] == [user.id]
    assert graph.get("/users?$filter=contains(displayName,'a')").status_code == 400


def test_patch_usage_location(sim: SimServer, graph: httpx.Client) -> None:
    user = next(u for u in sim.state.user_order if u.usage_location is None)
    response = graph.patch(f"/users/{user.id}", json={"usageLocation": "NL"})
    assert response.status_code == 204 and response.content == b""
    assert user.usage_location == "NL"
    for bad in ("XX", "nl", "NLD", 5):
        response = graph.patch(f"/users/{user.id}", json={"usageLocation": bad})
        assert response.status_code == 400
        assert response.json()["error"]["message"] == (
            "Invalid value specified for property 'usageLocation' of resource 'User'.")
    assert user.usage_location == "NL"
    assert graph.patch(f"/users/{user.id}", json={"assignedLicenses": []}).status_code == 400
    assert graph.patch("/users/00000000-0000-4000-8000-000000000000", json={"usageLocation": "NL"}
                       ).status_code == 404


def test_license_only_app_cannot_patch(sim: SimServer, tls: ssl.SSLContext) -> None:
    token = sim.issue_token(sim.info["license_only_client_id"])
    user = sim.state.user_order[0]
    response = httpx.patch(f"{sim.graph_url}/v1.0/users/{user.id}", json={"usageLocation": "NL"},
                           headers={"Authorization": f"Bearer {token}"}, verify=tls)
    assert response.status_code == 403


def test_beta_and_unknown_segment(sim: SimServer, graph: httpx.Client, tls: ssl.SSLContext) -> None:
    headers = graph.headers
    assert httpx.get(f"{sim.graph_url}/beta/subscribedSkus", headers=headers, verify=tls).status_code == 200
    response = graph.get("/devices")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Resource not found for the segment 'devices'."
