"""Injected faults (applied or not), latency, the write log and the control surface."""

from __future__ import annotations

import concurrent.futures
import ssl
import time

import httpx
import pytest

from graphsim.config import SimConfig
from graphsim.server import SimServer
from tests.graphsim.helpers import SKU, assign_body


def _free_user(sim: SimServer, index: int = 0) -> str:
    return [u.id for u in sim.state.user_order if u.usage_location and not u.licenses][index]


@pytest.mark.parametrize(("knob", "status"), [("fault_503", 503), ("fault_504", 504)])
def test_5xx_not_applied(sim: SimServer, graph: httpx.Client, control: httpx.Client, knob: str,
                         status: int) -> None:
    control.post("/config", json={knob: 1.0})
    user = _free_user(sim)
    response = graph.post(f"/users/{user}/assignLicense", json=assign_body(["SPE_E3"]))
    assert response.status_code == status
    assert "error" in response.json()
    assert not sim.state.users[user].licenses


def test_reset_drops_connection_without_applying(sim: SimServer, graph: httpx.Client,
                                                 control: httpx.Client) -> None:
    control.post("/config", json={"fault_reset": 1.0})
    user = _free_user(sim)
    with pytest.raises(httpx.TransportError):
        graph.post(f"/users/{user}/assignLicense", json=assign_body(["SPE_E3"]))
    assert not sim.state.users[user].licenses
    log = control.get("/writes").json()["value"]
    assert log[-1]["status"] == "reset" and log[-1]["user"] == user


def test_reset_after_apply_is_ambiguous(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    control.post("/config", json={"fault_reset_after_apply": 1.0})
    user = _free_user(sim)
    with pytest.raises(httpx.TransportError):
        graph.post(f"/users/{user}/assignLicense", json=assign_body(["SPE_E3"]))
    assert SKU["SPE_E3"] in sim.state.users[user].licenses


def test_malformed_body_after_apply(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    control.post("/config", json={"fault_malformed": 1.0})
    user = _free_user(sim)
    response = graph.post(f"/users/{user}/assignLicense", json=assign_body(["SPE_E3"]))
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert SKU["SPE_E3"] in sim.state.users[user].licenses


def test_slow_and_latency(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    control.post("/config", json={"fault_slow": 1.0, "slow_s": 0.2})
    start = time.monotonic()
    assert graph.get("/users?$top=1").status_code == 200
    assert time.monotonic() - start >= 0.2
    control.post("/config", json={"fault_slow": 0, "latency_ms": 30, "latency_jitter_ms": 10})
    start = time.monotonic()
    assert graph.get("/users?$top=1").status_code == 200
    assert time.monotonic() - start >= 0.02


def test_faulted_batch_is_whole(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    control.post("/config", json={"fault_503": 1.0})
    users = [_free_user(sim, i) for i in range(3)]
    requests = [{"id": str(i), "method": "POST", "url": f"/users/{u}/assignLicense",
                 "headers": {"Content-Type": "application/json"}, "body": assign_body(["SPE_E3"])}
                for i, u in enumerate(users)]
    assert graph.post("/$batch", json={"requests": requests}).status_code == 503
    assert not any(sim.state.users[u].licenses for u in users)
    assert len([e for e in control.get("/writes").json()["value"] if e["status"] == 503]) == 3


def test_fault_rates_are_seeded(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    def pattern() -> list[int]:
        control.post("/config", json={"fault_503": 0.5, "fault_seed": 42})
        return [graph.get("/users?$top=1").status_code for _ in range(20)]

    first = pattern()
    assert first == pattern()
    assert 503 in first and 200 in first


def test_write_log_and_stats(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    user = sim.state.user_order[0]
    graph.post(f"/users/{user.upn}/assignLicense", json=assign_body(["FLOW_FREE"]))
    graph.patch(f"/users/{user.id}", json={"usageLocation": "DE"})
    graph.get(f"/users/{user.id}")
    entries = control.get("/writes", params={"user": user.id}).json()["value"]
    assert [(e["method"], e["status"]) for e in entries] == [("POST", 200), ("PATCH", 204)]
    assert set(entries[0]) >= {"user", "method", "path", "status", "ts"}
    stats = control.get("/stats").json()
    assert stats["by_endpoint"]["assignLicense"] == {"200": 1}
    assert stats["by_endpoint"]["users.get"] == {"200": 1}
    assert stats["writes_accepted"] == 2


def test_stats_count_graph_requests_in_flight_until_answered(sim: SimServer, graph: httpx.Client,
                                                            control: httpx.Client) -> None:
    """A slow reply's write is logged only when it answers: the in-flight gauge says when that is."""
    user = _free_user(sim)
    control.post("/config", json={"fault_slow": 1.0, "slow_s": 1.5})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reply = pool.submit(graph.post, f"/users/{user}/assignLicense", json=assign_body(["SPE_E3"]))
        deadline = time.monotonic() + 1.0
        while control.get("/stats").json()["graph_requests_in_flight"] != 1:
            assert time.monotonic() < deadline and not reply.done(), "the slow request was never seen in flight"
            time.sleep(0.01)
        assert SKU["SPE_E3"] in sim.state.users[user].licenses  # applied before the slow reply
        assert control.get("/writes", params={"user": user}).json()["value"] == []
        assert reply.result(timeout=10).status_code == 200
    assert control.get("/stats").json()["graph_requests_in_flight"] == 0
    assert [e["fault"] for e in control.get("/writes", params={"user": user}).json()["value"]] == ["fault_slow"]


def test_control_views_and_reset(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    users = control.get("/users").json()["value"]
    assert len(users) == 200
    assert set(users[0]) >= {"id", "userPrincipalName", "usageLocation", "assignedLicenses"}
    assert control.get(f"/users/{users[0]['userPrincipalName']}").json()["id"] == users[0]["id"]
    assert control.get("/users/nobody").status_code == 404
    visio = next(s for s in control.get("/skus").json()["value"] if s["skuPartNumber"] == "VISIOCLIENT")
    assert visio["freeUnits"] == 10
    user = _free_user(sim)
    graph.post(f"/users/{user}/assignLicense", json=assign_body(["VISIOCLIENT"]))
    assert sim.state.free_seats("VISIOCLIENT") == 9
    control.post("/reset")
    assert sim.state.free_seats("VISIOCLIENT") == 10
    assert control.get("/stats").json()["writes_accepted"] == 0
    assert control.post("/config", json={"nope": 1}).status_code == 400


def test_control_surface_off_by_default() -> None:
    with SimServer(SimConfig(users=5)) as sim:
        assert sim.control_url is None
        response = httpx.get(f"{sim.graph_url}/_sim/stats", verify=ssl.create_default_context(cafile=sim.ca_path))
        assert response.status_code == 404

