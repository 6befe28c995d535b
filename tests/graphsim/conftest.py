"""Fixtures: one simulator per test session, reset to its fixture before each test."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from graphsim.config import SimConfig
from graphsim.fixture import GROUPS_ADMIN_CLIENT_ID
from graphsim.server import SimServer
from tests.fakes import FakeClock
from tests.graphsim.helpers import ClockedSim, graph_client, trust

DEFAULT_KNOBS: dict[str, Any] = {
    "write_limit": "3000/150", "tenant_write_limit": "18000/300", "latency_ms": 0, "latency_jitter_ms": 0,
    "fault_503": 0, "fault_504": 0, "fault_reset": 0, "fault_reset_after_apply": 0, "fault_slow": 0,
    "fault_malformed": 0, "slow_s": 5, "force_429": None, "token_lifetime_s": 3600,
    "read_limit": "none", "charge_refused": True, "replication_lag_s": 0, "outage_s": 0,
    # Group changes are processed on the next request: asynchronous, but tests need not wait for a clock.
    "group_license_delay_s": 0, "premium": True,
}


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimServer]:
    """One simulator (200 users, control surface on) for the session."""
    with SimServer(SimConfig(users=200, seed=1, control=True)) as server:
        yield server


@pytest.fixture(scope="session")
def tls(sim_server: SimServer) -> ssl.SSLContext:
    """TLS that trusts the simulator's CA only (httpx takes a context, not a CA path)."""
    return ssl.create_default_context(cafile=sim_server.ca_path)


@pytest.fixture
def control(sim_server: SimServer, tls: ssl.SSLContext) -> Iterator[httpx.Client]:
    """A client of the control surface."""
    with httpx.Client(base_url=str(sim_server.control_url), verify=tls, timeout=10) as client:
        yield client


@pytest.fixture
def sim(sim_server: SimServer, control: httpx.Client) -> SimServer:
    """The session's simulator, reset to its fixture and default knobs."""
    assert control.post("/config", json=DEFAULT_KNOBS).status_code == 200
    assert control.post("/reset").status_code == 200
    return sim_server


@pytest.fixture
def graph(sim: SimServer, tls: ssl.SSLContext) -> Iterator[httpx.Client]:
    """A Graph client authenticated as the fixture's main app."""
    headers = {"Authorization": f"Bearer {sim.issue_token()}"}
    with httpx.Client(base_url=f"{sim.graph_url}/v1.0", verify=tls, headers=headers,
                      timeout=10) as client:
        yield client


@pytest.fixture
def admin(sim: SimServer, tls: ssl.SSLContext) -> Iterator[httpx.Client]:
    """A Graph client authenticated as the fixture's groups administrator (may change groups)."""
    with graph_client(sim, tls, GROUPS_ADMIN_CLIENT_ID) as client:
        yield client


@pytest.fixture(scope="session")
def clocked_server() -> Iterator[tuple[SimServer, FakeClock]]:
    """A second simulator (60 users: a medium tenant) on a fake clock, for the session."""
    clock = FakeClock()
    with SimServer(SimConfig(users=60, seed=2, control=True, clock=clock)) as server:
        yield server, clock


@pytest.fixture
def clocked(clocked_server: tuple[SimServer, FakeClock]) -> Iterator[ClockedSim]:
    """The fake-clock simulator reset to its fixture and default knobs, with control and Graph clients."""
    server, clock = clocked_server
    headers = {"Authorization": f"Bearer {server.issue_token()}"}
    with httpx.Client(base_url=str(server.control_url), verify=trust(server), timeout=10) as control, \
            httpx.Client(base_url=f"{server.graph_url}/v1.0", verify=trust(server), headers=headers,
                         timeout=10) as graph:
        assert control.post("/config", json=DEFAULT_KNOBS).status_code == 200
        assert control.post("/reset").status_code == 200
        yield ClockedSim(server, clock, control, graph)
