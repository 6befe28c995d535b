"""$batch: limits, duplicate ids, shuffled responses, per-item statuses and per-item 429s."""

from __future__ import annotations

from typing import Any

import httpx

from graphsim.server import SimServer
from tests.graphsim.helpers import assign_body


def _item(item_id: str, user: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"id": item_id, "method": "POST", "url": f"/users/{user}/assignLicense",
            "headers": {"Content-Type": "application/json"}, "body": body}


def _free_users(sim: SimServer, n: int) -> list[str]:
    return [u.id for u in sim.state.user_order if u.usage_location and not u.licenses][:n]


def test_more_than_20_is_400(sim: SimServer, graph: httpx.Client) -> None:
    users = _free_users(sim, 21)
    response = graph.post("/$batch", json={"requests": [_item(str(i), u, assign_body(["SPE_E3"]))
                                                        for i, u in enumerate(users)]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert all(not sim.state.users[u].licenses for u in users)


def test_duplicate_ids_is_400(sim: SimServer, graph: httpx.Client) -> None:
    users = _free_users(sim, 2)
    response = graph.post("/$batch", json={"requests": [_item("1", u, assign_body(["SPE_E3"])) for u in users]})
    assert response.status_code == 400
    assert all(not sim.state.users[u].licenses for u in users)


def test_items_independent_and_shuffled(sim: SimServer, graph: httpx.Client) -> None:
    users = _free_users(sim, 19)
    no_location = next(u.id for u in sim.state.user_order if not u.usage_location)
    requests = [_item(str(i), u, assign_body(["SPE_E3"])) for i, u in enumerate(users)]
    requests.append(_item("bad", no_location, assign_body(["SPE_E3"])))
    response = graph.post("/$batch", json={"requests": requests})
    assert response.status_code == 200
    responses = response.json()["responses"]
    ids = [r["id"] for r in responses]
    assert sorted(ids) == sorted(r["id"] for r in requests)
    assert ids != [r["id"] for r in requests]  # Graph does not keep the order
    by_id = {r["id"]: r for r in responses}
    assert by_id["bad"]["status"] == 400
    assert by_id["bad"]["body"]["error"]["code"] == "Request_BadRequest"
    assert all(by_id[str(i)]["status"] == 200 for i in range(19))
    assert all(sim.state.users[u].licenses for u in users)
    assert set(by_id["0"]) == {"id", "status", "headers", "body"}


def test_get_items_and_no_content_type(sim: SimServer, graph: httpx.Client) -> None:
    user = sim.state.user_order[0]
    requests = [{"id": "a", "method": "GET", "url": f"/users/{user.upn}?$select=id"},
                {"id": "b", "method": "POST", "url": f"/users/{user.id}/assignLicense",
                 "body": assign_body(["SPE_E3"])}]
    by_id = {r["id"]: r for r in graph.post("/$batch", json={"requests": requests}).json()["responses"]}
    assert by_id["a"]["status"] == 200 and by_id["a"]["body"]["id"] == user.id
    assert by_id["b"]["status"] == 400


def test_depends_on_failed_item_is_424(sim: SimServer, graph: httpx.Client) -> None:
    no_location = next(u.id for u in sim.state.user_order if not u.usage_location)
    ok = _free_users(sim, 1)[0]
    requests = [_item("1", no_location, assign_body(["SPE_E3"])),
                {**_item("2", ok, assign_body(["SPE_E3"])), "dependsOn": ["1"]}]
    by_id = {r["id"]: r for r in graph.post("/$batch", json={"requests": requests}).json()["responses"]}
    assert by_id["1"]["status"] == 400 and by_id["2"]["status"] == 424
    assert not sim.state.users[ok].licenses


def test_throttled_items_inside_a_200_batch(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    control.post("/config", json={"write_limit": "5/60"})
    users = _free_users(sim, 8)
    response = graph.post("/$batch", json={"requests": [_item(str(i), u, assign_body(["SPE_E3"]))
                                                        for i, u in enumerate(users)]})
    assert response.status_code == 200
    items = response.json()["responses"]
    ok = [r for r in items if r["status"] == 200]
    throttled = [r for r in items if r["status"] == 429]
    assert len(ok) == 5 and len(throttled) == 3
    for item in throttled:
        assert float(item["headers"]["Retry-After"]) > 0
        assert item["headers"]["x-ms-throttle-information"] == "WriteLimitExceeded"
        assert item["body"]["error"]["code"] == "TooManyRequests"
    assert sum(1 for u in users if sim.state.users[u].licenses) == 5
    stats = control.get("/stats").json()
    assert stats["throttled_responses"] == 3 and stats["writes_accepted"] == 5
