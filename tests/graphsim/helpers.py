"""Builders shared by the simulator's tests: request bodies, clients, groups, and where to find users."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

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


def assign_body(add: list[str] | None = None, remove: list[str] | None = None,
                disabled: list[str] | None = None) -> dict[str, Any]:
    """An assignLicense body adding/removing SKUs (by part number)."""
    return {"addLicenses": [{"skuId": SKU[p], "disabledPlans": disabled or []} for p in add or []],
            "removeLicenses": [SKU[p] for p in remove or []]}


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


def trust(server: SimServer) -> ssl.SSLContext:
    """TLS that trusts one simulator's CA (httpx takes a context, not a CA path)."""
    return ssl.create_default_context(cafile=server.ca_path)
