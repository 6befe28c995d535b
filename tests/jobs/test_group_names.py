"""Group display names: asked of Graph once per group, kept per tenant in Redis (bounded), filled into results."""

from __future__ import annotations

import dataclasses
from typing import Any

import redis

from jobs.executor import run_users
from jobs.group_names import GroupNames
from jobs.models import Reason, UserStatus
from jobs.store import JobStore
from tests.fakes import FakeClock, Tenant
from tests.jobs.helpers import E3, EMS, job, make_deps, op, results

G1 = "0a0a0a0a-1111-4111-8111-000000000001"
G2 = "0a0a0a0a-1111-4111-8111-000000000002"
GONE = "0a0a0a0a-1111-4111-8111-0000000000ff"


class Asked:
    """A fetch that names what it knows and records what it was asked."""

    def __init__(self, known: dict[str, str]) -> None:
        self.known = known
        self.asked: list[str] = []

    def __call__(self, group_id: str) -> str | None:
        self.asked.append(group_id)
        return self.known.get(group_id)


def test_names_are_asked_once_and_kept_per_tenant(redis_client: redis.Redis) -> None:
    names = GroupNames(redis_client)
    fetch = Asked({G1: "Sales E3", G2: "Staff"})
    assert names.names("sim", [G1, G2, G1], fetch) == {G1: "Sales E3", G2: "Staff"}
    assert names.names("sim", [G2, G1], fetch) == {G1: "Sales E3", G2: "Staff"}
    assert fetch.asked == [G1, G2]
    assert names.names("other", [G1], fetch) == {G1: "Sales E3"}  # another tenant asks again
    assert fetch.asked == [G1, G2, G1]
    assert 0 < int(redis_client.ttl("bl:groupnames:sim")) <= 3600


def test_a_group_graph_does_not_name_is_left_out_and_not_kept(redis_client: redis.Redis) -> None:
    names = GroupNames(redis_client)
    fetch = Asked({G1: "Sales E3"})
    assert names.names("sim", [GONE, G1], fetch) == {G1: "Sales E3"}
    assert names.names("sim", [GONE], fetch) == {}
    assert fetch.asked == [GONE, G1, GONE]


def test_the_cache_and_the_lookups_are_bounded(redis_client: redis.Redis) -> None:
    names = GroupNames(redis_client, max_entries=2, max_lookups=2)
    ids = [f"0a0a0a0a-1111-4111-8111-00000000000{i}" for i in range(4)]
    fetch = Asked({gid: f"group {i}" for i, gid in enumerate(ids)})
    assert names.names("sim", ids, fetch) == {ids[0]: "group 0", ids[1]: "group 1"}
    assert fetch.asked == ids[:2]
    names.names("sim", ids[2:], fetch)
    assert int(redis_client.hlen("bl:groupnames:sim")) == 2  # a full hash started afresh
    assert redis_client.hget("bl:groupnames:sim", ids[0]) is None


def inherited(sku: str, *groups: str) -> dict[str, Any]:
    """A user holding `sku` only through `groups`, as Graph shows it."""
    return {"usageLocation": "US", "assignedLicenses": [{"skuId": sku, "disabledPlans": []}],
            "licenseAssignmentStates": [{"skuId": sku, "assignedByGroup": g, "disabledPlans": [], "state": "Active",
                                         "error": "None"} for g in groups]}


def test_a_chunk_names_the_groups_in_its_results_asking_graph_once_per_group(
        store: JobStore, clock: FakeClock, redis_client: redis.Redis) -> None:
    users = {f"u{i}@x": inherited(E3, G1) for i in range(5)} | {"v@x": inherited(EMS, G1, GONE)}
    tenant = Tenant(users, groups={G1: "Sales E3"})
    ops = [op(i + 2, f"u{i}@x", remove=(E3,)) for i in range(5)] + [op(7, "v@x", add=(EMS,))]
    job_id = job(store, ops)
    deps, _ = make_deps(store, tenant, clock)
    deps = dataclasses.replace(deps, group_names=GroupNames(redis_client))
    assert run_users(deps, job_id, 0, budget_started_at=clock()) == 6
    got = results(store, job_id)
    assert tenant.writes == []
    for i in range(5):
        result = got[f"u{i}@x"]
        assert (result.status, result.reason) == (UserStatus.FAILED, Reason.INHERITED_FROM_GROUP)
        assert [(g.sku_id, g.group_id, g.group_name) for g in result.groups] == [(E3, G1, "Sales E3")]
    noted = got["v@x"]
    assert noted.status is UserStatus.UNCHANGED and noted.note is not None
    assert [(g.group_id, g.group_name) for g in noted.groups] == [(G1, "Sales E3"), (GONE, None)]
    assert sorted(tenant.group_reads) == [G1, GONE]
