"""Security groups through Graph: create, read, list, members (20 links per request, all or nothing), delete."""

from __future__ import annotations

import ssl

import httpx

from graphsim.server import SimServer
from tests.graphsim.helpers import SKU, bind, free_users, graph_client, new_group

LINK_LIMIT = "A resource cannot contain more than 20 link changes"
ALREADY = "One or more added object references already exist for the following modified properties: 'members'."
NOT_FOUND = "Resource '{}' does not exist or one of its queried reference-property objects are not present."


def _members(client: httpx.Client, group_id: str) -> list[str]:
    return [m["id"] for m in client.get(f"/groups/{group_id}/members?$select=id&$top=999").json()["value"]]


def test_create_and_read_a_security_group(admin: httpx.Client) -> None:
    response = admin.post("/groups", json={"displayName": "Sales", "mailNickname": "sales", "mailEnabled": False,
                                           "securityEnabled": True, "description": "Sales staff"})
    assert response.status_code == 201
    created = response.json()
    assert created["displayName"] == "Sales" and created["securityEnabled"] is True
    assert created["mailEnabled"] is False and created["groupTypes"] == [] and created["mail"] is None
    assert created["securityIdentifier"].startswith("S-1-12-1-")
    # assignedLicenses and licenseProcessingState are returned only on $select.
    assert "assignedLicenses" not in created and "licenseProcessingState" not in created
    group = admin.get(f"/groups/{created['id']}").json()
    assert group["id"] == created["id"] and group["description"] == "Sales staff"
    selected = admin.get(f"/groups/{created['id']}?$select=id,assignedLicenses,licenseProcessingState,"
                         "hasMembersWithLicenseErrors").json()
    assert selected["assignedLicenses"] == [] and selected["licenseProcessingState"] == {"state": "ProcessingComplete"}
    assert "hasMembersWithLicenseErrors" not in selected  # filter-only: never returned
    assert admin.get(f"/groups/{created['id']}?$select=nope").status_code == 400


def test_creation_is_refused_for_what_graphsim_does_not_model(admin: httpx.Client) -> None:
    base = {"displayName": "X", "mailNickname": "x", "mailEnabled": False, "securityEnabled": True}
    for body in ({**base, "mailEnabled": True}, {**base, "securityEnabled": False}):
        refused = admin.post("/groups", json=body)
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == ("Cannot Create a mail-enabled security groups and or "
                                                      "distribution list.")
    for body in ({**base, "groupTypes": ["Unified"]},
                 {k: v for k, v in base.items() if k != "mailNickname"}, {**base, "colour": "red"}):
        response = admin.post("/groups", json=body)
        assert response.status_code == 400 and response.json()["error"]["code"] == "Request_BadRequest", body
    assert admin.post("/groups", content=b"{", headers={"Content-Type": "application/json"}).status_code == 400


def test_the_products_apps_may_read_groups_but_not_change_members(sim: SimServer, admin: httpx.Client,
                                                                   graph: httpx.Client, tls: ssl.SSLContext) -> None:
    group_id = new_group(admin)
    assert graph.get(f"/groups/{group_id}").status_code == 200  # GroupMember.Read.All
    assert graph.post("/groups", json={"displayName": "X", "mailNickname": "x", "mailEnabled": False,
                                       "securityEnabled": True}).status_code == 403
    user = free_users(sim, 1)[0]
    for response in (graph.patch(f"/groups/{group_id}", json=bind(user)),
                     graph.post(f"/groups/{group_id}/members/$ref",
                                json={"@odata.id": f"https://graph.microsoft.com/v1.0/users/{user}"}),
                     graph.delete(f"/groups/{group_id}")):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "Authorization_RequestDenied"
    with graph_client(sim, tls, sim.info["readonly_client_id"]) as readonly:
        assert readonly.get(f"/groups/{group_id}").status_code == 403  # no group read role
        refused = readonly.post(f"/groups/{group_id}/assignLicense",
                                json={"addLicenses": [{"skuId": SKU["EMS"]}], "removeLicenses": []})
        assert refused.status_code == 403
    # LicenseAssignment.ReadWrite.All is enough to license a group, as in Graph: the write log tells whether
    # an app did.
    licensed = graph.post(f"/groups/{group_id}/assignLicense",
                          json={"addLicenses": [{"skuId": SKU["EMS"]}], "removeLicenses": []})
    assert licensed.status_code == 202


def test_patch_adds_up_to_20_members_all_or_nothing(sim: SimServer, admin: httpx.Client) -> None:
    group_id = new_group(admin)
    users = free_users(sim, 23)
    too_many = admin.patch(f"/groups/{group_id}", json=bind(*users[:21]))
    assert too_many.status_code == 400
    assert too_many.json()["error"] == {**too_many.json()["error"], "code": "Request_BadRequest",
                                        "message": LINK_LIMIT}
    assert _members(admin, group_id) == []
    assert admin.patch(f"/groups/{group_id}", json=bind(*users[:20])).status_code == 204
    assert _members(admin, group_id) == users[:20]
    # One existing member among new ones: nothing is added.
    again = admin.patch(f"/groups/{group_id}", json=bind(users[20], users[0], users[21]))
    assert again.status_code == 400 and again.json()["error"]["message"] == ALREADY
    # An unknown object: 404 naming it, nothing added.
    ghost = "00000000-0000-4000-8000-000000000000"
    missing = admin.patch(f"/groups/{group_id}", json=bind(users[20], ghost))
    assert missing.status_code == 404 and missing.json()["error"]["message"] == NOT_FOUND.format(ghost)
    assert _members(admin, group_id) == users[:20]
    bad_url = admin.patch(f"/groups/{group_id}", json={"members@odata.bind": ["not a url"]})
    assert bad_url.status_code == 400


def test_add_and_remove_one_member_by_ref(sim: SimServer, admin: httpx.Client) -> None:
    group_id = new_group(admin)
    user = free_users(sim, 1)[0]
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user}"}
    added = admin.post(f"/groups/{group_id}/members/$ref", json=ref)
    assert added.status_code == 204 and added.content == b""
    twice = admin.post(f"/groups/{group_id}/members/$ref", json=ref)
    assert twice.status_code == 400 and twice.json()["error"]["message"] == ALREADY
    removed = admin.delete(f"/groups/{group_id}/members/{user}/$ref")
    assert removed.status_code == 204
    gone = admin.delete(f"/groups/{group_id}/members/{user}/$ref")
    assert gone.status_code == 404 and gone.json()["error"]["message"] == NOT_FOUND.format(user)
    assert _members(admin, group_id) == []


def test_nested_groups_are_members_but_listed_as_groups(sim: SimServer, admin: httpx.Client) -> None:
    outer, inner = new_group(admin, "Outer"), new_group(admin, "Inner")
    user = free_users(sim, 1)[0]
    body = {"members@odata.bind": [f"https://graph.microsoft.com/v1.0/groups/{inner}",
                                   f"https://graph.microsoft.com/v1.0/users/{user}"]}
    assert admin.patch(f"/groups/{outer}", json=body).status_code == 204
    members = admin.get(f"/groups/{outer}/members?$select=id,displayName").json()
    assert members["@odata.context"].endswith("$metadata#directoryObjects(id,displayName)")
    assert [(m["@odata.type"], m["id"]) for m in members["value"]] == [("#microsoft.graph.group", inner),
                                                                       ("#microsoft.graph.user", user)]
    assert admin.patch(f"/groups/{outer}", json=bind(outer)).status_code == 400  # not itself


def test_members_are_paged(sim: SimServer, admin: httpx.Client) -> None:
    group_id = new_group(admin)
    users = free_users(sim, 40)
    for start in (0, 20):
        assert admin.patch(f"/groups/{group_id}", json=bind(*users[start:start + 20])).status_code == 204
    seen: list[str] = []
    url: str | None = f"/groups/{group_id}/members?$top=15&$select=id,userPrincipalName"
    pages = 0
    while url:
        body = admin.get(url).json()
        seen += [m["id"] for m in body["value"]]
        url = body.get("@odata.nextLink")
        pages += 1
    assert pages == 3 and seen == users


def test_list_groups_paged_and_filtered(admin: httpx.Client) -> None:
    ids = [new_group(admin, f"Team {n}") for n in range(5)]
    first = admin.get("/groups?$top=2&$select=id,displayName").json()
    assert [g["id"] for g in first["value"]] == ids[:2] and "@odata.nextLink" in first
    rest = admin.get(first["@odata.nextLink"]).json()["value"]
    assert [g["id"] for g in rest] == ids[2:4]
    named = admin.get("/groups?$filter=displayName eq 'Team 3'").json()["value"]
    assert [g["id"] for g in named] == [ids[3]]
    assert admin.get("/groups?$filter=hasMembersWithLicenseErrors eq true").json()["value"] == []
    assert admin.get("/groups?$filter=contains(displayName,'Team')").status_code == 400


def test_delete_group(sim: SimServer, admin: httpx.Client) -> None:
    group_id = new_group(admin)
    user = free_users(sim, 1)[0]
    assert admin.patch(f"/groups/{group_id}", json=bind(user)).status_code == 204
    assert admin.delete(f"/groups/{group_id}").status_code == 204
    assert admin.get(f"/groups/{group_id}").status_code == 404
    assert sim.state.users[user].member_of == frozenset()


def test_group_writes_are_counted_logged_and_charged(sim: SimServer, admin: httpx.Client,
                                                     control: httpx.Client) -> None:
    group_id = new_group(admin)
    users = free_users(sim, 2)
    patched = admin.patch(f"/groups/{group_id}", json=bind(*users))
    assert patched.headers["x-ms-resource-unit"] == "1"  # one write and one unit, however many links
    members = admin.get(f"/groups/{group_id}/members")
    assert members.headers["x-ms-resource-unit"] == "3"  # groups/{id}/members costs 3
    assert admin.get(f"/groups/{group_id}/members?$select=id").headers["x-ms-resource-unit"] == "2"
    stats = control.get("/stats").json()
    assert stats["writes_accepted"] == stats["group_writes_accepted"] == 2
    assert stats["by_endpoint"]["groups.patch"] == {"204": 1}
    logged = control.get("/writes", params={"group": group_id}).json()["value"]
    assert [(e["method"], e["status"], e["group_id"], e["user"]) for e in logged] == [
        ("POST", 201, group_id, None), ("PATCH", 204, group_id, None)]
    assert control.get("/writes", params={"group": "*"}).json()["count"] == 2


def test_group_calls_in_a_batch(sim: SimServer, admin: httpx.Client, control: httpx.Client) -> None:
    group_id = new_group(admin)
    user = free_users(sim, 1)[0]
    requests = [
        {"id": "1", "method": "POST", "url": f"/groups/{group_id}/members/$ref",
         "headers": {"Content-Type": "application/json"},
         "body": {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{user}"}},
        {"id": "2", "method": "GET", "url": f"/groups/{group_id}/members?$select=id", "dependsOn": ["1"]},
    ]
    responses = {r["id"]: r for r in admin.post("/$batch", json={"requests": requests}).json()["responses"]}
    assert responses["1"]["status"] == 204
    assert [m["id"] for m in responses["2"]["body"]["value"]] == [user]
    logged = control.get("/writes", params={"group": group_id}).json()["value"]
    assert [(e["method"], e["path"].rsplit("/", 1)[-1]) for e in logged] == [("POST", "groups"), ("POST", "$ref")]


def test_odd_input_is_refused_never_a_500(sim: SimServer, admin: httpx.Client, control: httpx.Client) -> None:
    group_id, user = new_group(admin), free_users(sim, 1)[0]
    bodies = [b"", b"{", b"[]", b"1", b'{"members@odata.bind": 5}', b'{"members@odata.bind": [5]}',
              b'{"@odata.id": 5}', b'{"addLicenses": [1], "removeLicenses": []}', b'{"displayName": null}',
              b'{"description": 5}', b'{"employeeHireDate": "2024-02-30"}', b'{"add": 5, "queue": 1}',
              b'{"signInActivity": {"lastSignInDateTime": 5}}', b'{"licenses": [{"sku": 5}]}']
    paths = ["/groups", f"/groups/{group_id}", f"/groups/{group_id}/members/$ref",
             f"/groups/{group_id}/members/{user}/$ref", f"/groups/{group_id}/assignLicense", f"/users/{user}",
             "/groups/nope/members/$ref"]
    queries = ["", "?$top=x", "?$filter=createdDateTime ge 2024-02-30T00:00:00Z", "?$filter=not(", "?$skiptoken=!"]
    statuses = set()
    for path in paths:
        for query in queries:
            statuses.add(admin.get(path + query).status_code)
        for method in ("POST", "PATCH"):
            for body in bodies:
                statuses.add(admin.request(method, path, content=body,
                                           headers={"Content-Type": "application/json"}).status_code)
    for path in ("/groups", f"/users/{user}", "/groups/nope/members"):
        for body in bodies:
            statuses.add(control.request("PATCH" if path.startswith("/users") else "POST", path,
                                         content=body).status_code)
    assert max(statuses) < 500 and {400, 404, 405} <= statuses


def test_group_writes_share_the_write_limits(sim: SimServer, admin: httpx.Client, control: httpx.Client) -> None:
    group_id = new_group(admin)
    users = free_users(sim, 2)
    assert control.post("/config", json={"write_limit": "1/1000"}).status_code == 200
    assert admin.patch(f"/groups/{group_id}", json=bind(users[0])).status_code == 204
    refused = admin.patch(f"/groups/{group_id}", json=bind(users[1]))
    assert refused.status_code == 429 and refused.headers["x-ms-throttle-information"] == "WriteLimitExceeded"
    assert _members(admin, group_id) == [users[0]]
    logged = control.get("/writes", params={"group": group_id}).json()["value"]
    assert [e["status"] for e in logged] == [201, 204, 429]
