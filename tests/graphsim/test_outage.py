"""The outage switch: Graph and the identity platform stop answering at all; the control surface does not."""

from __future__ import annotations

import httpx
import pytest

from graphsim.server import SimServer
from tests.graphsim.helpers import SKU, ClockedSim, assign_body, trust


def _token_request(server: SimServer) -> httpx.Response:
    info = server.info
    return httpx.post(f"{info['authority']}/oauth2/v2.0/token", verify=trust(server), data={
        "grant_type": "client_credentials", "client_id": info["client_id"], "client_secret": info["client_secret"],
        "scope": "https://graph.microsoft.com/.default"})


def _discovery(server: SimServer) -> httpx.Response:
    return httpx.get(f"{server.info['authority']}/v2.0/.well-known/openid-configuration", verify=trust(server))


def test_outage_drops_every_graph_and_identity_request_without_a_response(clocked: ClockedSim) -> None:
    server, control, graph = clocked.server, clocked.control, clocked.graph
    user = next(u for u in server.state.user_order if u.usage_location and not u.licenses)
    assert control.post("/config", json={"outage_s": 30}).json()["outage_s"] == 30
    # No status line at all, as when the service is unreachable: the client sees a transport error.
    with pytest.raises(httpx.TransportError):
        graph.get("/users")
    with pytest.raises(httpx.TransportError):
        graph.post(f"/users/{user.id}/assignLicense", json=assign_body(["FLOW_FREE"]))
    with pytest.raises(httpx.TransportError):
        _token_request(server)
    with pytest.raises(httpx.TransportError):
        _discovery(server)
    assert not user.licenses
    # The control surface keeps answering and saw every dropped request.
    stats = control.get("/stats").json()
    assert stats["faults"] == {"outage": 4}
    assert stats["by_status"] == {"dropped": 4}
    assert {name: per["dropped"] for name, per in stats["by_endpoint"].items()} == {
        "users.list": 1, "assignLicense": 1, "token": 1, "openid-configuration": 1}
    assert stats["writes_accepted"] == 0 and stats["reads_accepted"] == 0
    log = control.get("/writes").json()["value"]
    assert [(e["user"], e["status"], e["fault"]) for e in log] == [(user.id, "dropped", "outage")]


def test_outage_ends_when_its_time_is_up(clocked: ClockedSim) -> None:
    control, graph = clocked.control, clocked.graph
    control.post("/config", json={"outage_s": 10})
    clocked.clock.advance(4)
    assert control.get("/config").json()["outage_s"] == 6
    with pytest.raises(httpx.TransportError):
        graph.get("/subscribedSkus")
    clocked.clock.advance(6)
    assert control.get("/config").json()["outage_s"] == 0
    assert graph.get("/subscribedSkus").status_code == 200
    assert _token_request(clocked.server).status_code == 200


def test_outage_batch_items_are_logged_and_not_applied(clocked: ClockedSim) -> None:
    server, control, graph = clocked.server, clocked.control, clocked.graph
    users = [u for u in server.state.user_order if u.usage_location and not u.licenses][:2]
    control.post("/config", json={"outage_s": 5})
    requests = [{"id": str(i), "method": "POST", "url": f"/users/{u.id}/assignLicense",
                 "headers": {"Content-Type": "application/json"}, "body": assign_body(["EMS"])}
                for i, u in enumerate(users)]
    with pytest.raises(httpx.TransportError):
        graph.post("/$batch", json={"requests": requests})
    assert not any(SKU["EMS"] in u.licenses for u in users)
    assert [e["status"] for e in control.get("/writes").json()["value"]] == ["dropped", "dropped"]


def test_outage_zero_or_reset_ends_it_and_bad_values_start_none(clocked: ClockedSim) -> None:
    control, graph = clocked.control, clocked.graph
    control.post("/config", json={"outage_s": 60})
    assert control.post("/config", json={"outage_s": 0}).json()["outage_s"] == 0
    assert graph.get("/users?$top=1").status_code == 200
    control.post("/config", json={"outage_s": 60})
    control.post("/reset")
    assert graph.get("/users?$top=1").status_code == 200
    for bad in ({"outage_s": -1}, {"outage_s": "soon"}, {"outage_s": True}, {"outage_s": 60, "nope": 1}):
        assert control.post("/config", json=bad).status_code == 400
    assert control.get("/config").json()["outage_s"] == 0
    assert graph.get("/users?$top=1").status_code == 200
