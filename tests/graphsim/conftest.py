"""Fixtures: one simulator per test session, reset to its fixture before each test."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from graphsim.config import SimConfig
from graphsim.fixture import GROUPS_ADMIN_CLIENT_ID
from graphsim.server import SimServer
from tests.fakes import FakeClock

SKU = {
    "ENTERPRISEPACK": "6fd2c87f-b296-42f0-b197-1e91e994b900",
    "SPE_E3": "05e9a617-0261-4cee-bb44-138d3ef5d965",
    "SPE_E5": "06ebc4ee-1bb5-47dd-8120-11324bc54e06",
    "EMS": "efccb6f7-5641-4e0e-bd10-b4976e1bf68e",
    "POWER_BI_PRO": "f8a1db68-be16-40ed-86d5-cb42ce701560",
    "FLOW_FREE": "f30db892-07e9-47e9-837c-80727f46fd3d",
    "STANDARDPACK": "18181a46-0d4e-45cd-891e-60aabd171b4e",
    "VISIOCLIENT": "c5928f49-12ba-48f7-ada3-0d743a3601d5",
    "WINDOWS_STORE": "6470687e-a428-4b7a-bef2-8a291ad947c9",
}
DEFAULT_KNOBS: dict[str, Any] = {
    "write_limit": "3000/150", "tenant_write_limit": "18000/300", "latency_ms": 0, "latency_jitter_ms": 0,
    "fault_503": 0, "fault_504": 0, "fault_reset": 0, "fault_reset_after_apply": 0, "fault_slow": 0,
    "fault_malformed": 0, "slow_s": 5, "force_429": None, "token_lifetime_s": 3600,
    "read_limit": "none", "charge_refused": True, "replication_lag_s": 0, "outage_s": 0,
    # Group changes are processed on the next request: asynchronous, but tests need not wait for a clock.
    "group_license_delay_s": 0, "premium": True,
}


def assign_body(add: list[str] | None = None, remove: list[str] | None = None,
                disabled: list[str] | None = None) -> dict[str, Any]:
    """An assignLicense body adding/removing SKUs (by part number)."""
    return {"addLicenses": [{"skuId": SKU[p], "disabledPlans": disabled or []} for p in add or []],
            "removeLicenses": [SKU[p] for p in remove or []]}


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


def graph_client(sim: SimServer, tls: ssl.SSLContext, client_id: str | None = None) -> httpx.Client:
    """A v1.0 Graph client with a token for one of the fixture's apps (the main app by default)."""
    headers = {"Authorization": f"Bearer {sim.issue_token(client_id)}"}
    return httpx.Client(base_url=f"{sim.graph_url}/v1.0", verify=tls, headers=headers, timeout=10)


def bind(*ids: str) -> dict[str, list[str]]:
    """A PATCH body adding members by directoryObjects URL."""
    return {"members@odata.bind": [f"https://graph.microsoft.com/v1.0/directoryObjects/{i}" for i in ids]}


def new_group(admin: httpx.Client, name: str = "Licensed group") -> str:
    """Create a security group through Graph; its id."""
    response = admin.post("/groups", json={"displayName": name, "mailNickname": name.replace(" ", ""),
                                           "mailEnabled": False, "securityEnabled": True})
    assert response.status_code == 201, response.text
    group_id: str = response.json()["id"]
    return group_id


def processing_state(client: httpx.Client, group_id: str) -> str:
    """The group's licenseProcessingState.state (reading it also lets due processing run)."""
    body = client.get(f"/groups/{group_id}?$select=licenseProcessingState").json()
    state: str = body["licenseProcessingState"]["state"]
    return state


def free_users(sim: SimServer, n: int) -> list[str]:
    """Ids of `n` users with a usageLocation and no license at all."""
    users = [u.id for u in sim.state.user_order if u.usage_location and not u.licenses and not u.inherited][:n]
    assert len(users) == n
    return users


def states(client: httpx.Client, user: str) -> list[dict[str, Any]]:
    """A user's licenseAssignmentStates through Graph."""
    body = client.get(f"/users/{user}?$select=licenseAssignmentStates").json()
    value: list[dict[str, Any]] = body["licenseAssignmentStates"]
    return value


def licensed_user(sim: SimServer, part: str | None = None, *, location: bool = True) -> str:
    """The id of a user with (or without) a usageLocation holding `part` (None: no license at all)."""
    for user in sim.state.user_order:
        if bool(user.usage_location) != location:
            continue
        if part is None and not user.licenses:
            return user.id
        if part is not None and SKU[part] in user.licenses:
            return user.id
    raise LookupError(part)


@dataclass
class ClockedSim:
    """A simulator whose clock (throttle buckets, outages, replication) only moves when the test says so."""

    server: SimServer
    clock: FakeClock
    control: httpx.Client
    graph: httpx.Client


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


def trust(server: SimServer) -> ssl.SSLContext:
    """TLS that trusts one simulator's CA (httpx takes a context, not a CA path)."""
    return ssl.create_default_context(cafile=server.ca_path)
