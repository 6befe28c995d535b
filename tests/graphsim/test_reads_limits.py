"""Resource-unit read limits: request costs, tenant sizes, 429s on reads, charging refused requests, stats."""

from __future__ import annotations

import httpx
import pytest

from graphsim.cli import build_parser, config_from_args
from graphsim.config import AUTO, SimConfig, WriteLimit, apply_updates, resolve_read_limit, tenant_read_limit
from graphsim.server import SimServer
from graphsim.throttle import Throttler, resource_units
from tests.fakes import FakeClock
from tests.graphsim.helpers import ClockedSim, assign_body


@pytest.mark.parametrize(("method", "path", "query", "cost"), [
    ("GET", "users", {}, 2),
    ("GET", "users", {"$select": ["id,assignedLicenses"], "$top": ["999"]}, 1),
    ("GET", "users", {"$top": ["5"]}, 1),
    ("GET", "users", {"$top": ["5"], "$select": ["id"]}, 1),  # never below 1
    ("GET", "users", {"$expand": ["manager"]}, 3),
    ("GET", "users/u1", {}, 1),  # not in the cost table: any other identity GET
    ("GET", "users/u1/licenseDetails", {}, 2),
    ("GET", "subscribedSkus", {}, 3),
    ("GET", "subscribedSkus", {"$select": ["skuId"]}, 2),
    ("GET", "subscribedSkus/t_s", {}, 1),
    ("POST", "users/u1/assignLicense", {}, 1),
    ("PATCH", "users/u1", {}, 1),
    ("GET", "groups", {}, 1),  # not in the cost table
    ("GET", "groups/g1/members", {}, 3),
    ("GET", "groups/g1/members", {"$select": ["id"], "$top": ["5"]}, 1),
    ("GET", "groups/g1/membersWithLicenseErrors", {}, 1),
    ("PATCH", "groups/g1", {}, 1),
    ("POST", "groups/g1/assignLicense", {}, 1),
])
def test_resource_unit_costs(method: str, path: str, query: dict[str, list[str]], cost: int) -> None:
    assert resource_units(method, path.split("/"), query) == cost


@pytest.mark.parametrize(("users", "capacity"), [(0, 3500), (49, 3500), (50, 5000), (500, 5000), (501, 8000)])
def test_tenant_size_sets_the_read_limit(users: int, capacity: int) -> None:
    assert tenant_read_limit(users) == WriteLimit(capacity, 10.0)
    assert resolve_read_limit(AUTO, users) == WriteLimit(capacity, 10.0)
    assert resolve_read_limit(None, users) is None
    assert resolve_read_limit(WriteLimit(7, 1.0), users) == WriteLimit(7, 1.0)


def test_read_bucket_refuses_with_read_scope_and_writes_spend_resource_units() -> None:
    clock = FakeClock()
    throttler = Throttler("t", WriteLimit(100, 1.0), None, clock, WriteLimit(5, 10.0))  # 0.5 RU/s
    assert not throttler.charge("a", 2, writes=0).throttled
    assert not throttler.charge("a", 2, writes=0).throttled
    assert not throttler.charge("a", 1, writes=1).throttled  # a write: 1 RU and 1 write
    read = throttler.charge("a", 1, writes=0)
    assert read.throttled and read.scope == "Tenant_Application/Read/a/t"
    assert read.information == "ResourceUnitLimitExceeded"
    assert read.retry_after_s == pytest.approx(2.0)  # one unit at 0.5/s
    write = throttler.charge("a", 1, writes=1)
    assert write.throttled and write.scope == "Tenant_Application/ReadWrite/a/t"
    assert not throttler.charge("b", 2, writes=0).throttled  # every app has its own resource-unit bucket
    clock.advance(2.0)
    assert not throttler.charge("a", 1, writes=0).throttled


def test_no_read_limit_never_refuses_reads() -> None:
    throttler = Throttler("t", WriteLimit(1, 100.0), None, FakeClock())
    assert not any(throttler.charge("a", 3, writes=0).throttled for _ in range(10_000))


@pytest.mark.parametrize("charge_refused", [True, False])
def test_refused_requests_spend_the_refusing_bucket_only_when_charged(charge_refused: bool) -> None:
    clock = FakeClock()
    throttler = Throttler("t", WriteLimit(1, 1.0), WriteLimit(10, 1000.0), clock, charge_refused=charge_refused)
    assert not throttler.charge("a").throttled
    clock.advance(0.5)  # half a token back in the app bucket
    refused = throttler.charge("a")
    assert refused.throttled and refused.scope == "Tenant_Application/Write/a/t"
    # Charged, the refusal spent the half token: a whole token's wait; uncharged, only the missing half.
    assert refused.retry_after_s == pytest.approx(1.0 if charge_refused else 0.5)
    clock.advance(0.5)
    assert throttler.charge("a").throttled is charge_refused
    # The tenant bucket never refused, so it paid only for the accepted writes (one charged, two uncharged).
    for i in range(9 if charge_refused else 8):
        assert not throttler.charge(f"other{i}").throttled
    assert throttler.charge("last").scope == "Tenant/Write/last/t"


def test_hammering_gets_nothing_through_when_refusals_are_charged() -> None:
    clock = FakeClock()
    charged = Throttler("t", WriteLimit(1, 1.0), None, clock)
    free = Throttler("t", WriteLimit(1, 1.0), None, clock, charge_refused=False)
    accepted = {"charged": 0, "free": 0}
    for _ in range(40):  # one attempt every 0.25 s for 10 s, four times the refill rate
        accepted["charged"] += not charged.charge("a").throttled
        accepted["free"] += not free.charge("a").throttled
        clock.advance(0.25)
    assert accepted == {"charged": 1, "free": 10}


def test_config_knobs_and_cli() -> None:
    config = apply_updates(SimConfig(), {"read_limit": "auto", "charge_refused": False, "replication_lag_s": 3})
    assert (config.read_limit, config.charge_refused, config.replication_lag_s) == (AUTO, False, 3.0)
    assert config.describe()["read_limit"] == "auto"
    assert apply_updates(config, {"read_limit": "100/10"}).read_limit == WriteLimit(100, 10.0)
    assert apply_updates(config, {"read_limit": {"capacity": 9, "period_s": 1}}).read_limit == WriteLimit(9, 1.0)
    assert apply_updates(config, {"read_limit": None}).read_limit is None
    for bad in ({"read_limit": "lots"}, {"charge_refused": 1}, {"replication_lag_s": -1}):
        with pytest.raises(ValueError):
            apply_updates(config, bad)
    parser = build_parser()
    default = config_from_args(parser.parse_args([]))
    assert (default.read_limit, default.charge_refused, default.replication_lag_s) == (None, True, 0.0)
    config = config_from_args(parser.parse_args(["--read-limit", "350/10", "--no-charge-refused",
                                                 "--replication-lag-s", "2.5"]))
    assert (config.read_limit, config.charge_refused, config.replication_lag_s) == (WriteLimit(350, 10.0), False,
                                                                                    2.5)
    assert config_from_args(parser.parse_args(["--read-limit", "auto"])).read_limit == AUTO
    with pytest.raises(SystemExit):
        parser.parse_args(["--read-limit", "soon"])


def test_reads_carry_their_cost_and_stats_count_them(sim: SimServer, graph: httpx.Client,
                                                     control: httpx.Client) -> None:
    user = sim.state.user_order[0]
    assert graph.get("/users").headers["x-ms-resource-unit"] == "2"
    assert graph.get("/users?$select=id&$top=999").headers["x-ms-resource-unit"] == "1"
    assert graph.get(f"/users/{user.id}/licenseDetails").headers["x-ms-resource-unit"] == "2"
    assert graph.get("/subscribedSkus").headers["x-ms-resource-unit"] == "3"
    assert graph.get("/users/nobody@contoso.example").headers["x-ms-resource-unit"] == "1"  # a 404 costs too
    assert graph.post(f"/users/{user.id}/assignLicense", json=assign_body(["FLOW_FREE"])
                      ).headers["x-ms-resource-unit"] == "1"
    stats = control.get("/stats").json()
    assert stats["reads_accepted"] == 5 and stats["writes_accepted"] == 1
    assert stats["reads_by_endpoint"] == {"users.list": 2, "licenseDetails": 1, "subscribedSkus": 1,
                                          "users.get": 1}
    assert stats["resource_units_used"] == 2 + 1 + 2 + 3 + 1 + 1
    assert stats["reads_throttled"] == 0 and stats["resource_units_refused"] == 0


def test_read_limit_429(clocked: ClockedSim) -> None:
    control, graph = clocked.control, clocked.graph
    assert control.post("/config", json={"read_limit": "5/10"}).json()["read_limit"] == "5/10"
    assert [graph.get("/users").status_code for _ in range(2)] == [200, 200]
    near = graph.get("/users?$select=id")
    assert near.status_code == 200 and near.headers["x-ms-throttle-limit-percentage"] == "1.00"
    refused = graph.get("/users")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "4"  # 2 units at 0.5/s, the bucket empty
    assert refused.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    app, tenant = clocked.server.info["client_id"], clocked.server.info["tenant_id"]
    assert refused.headers["x-ms-throttle-scope"] == f"Tenant_Application/Read/{app}/{tenant}"
    assert refused.headers["x-ms-resource-unit"] == "2"
    assert refused.json()["error"]["code"] == "TooManyRequests"
    # Writes need a resource unit as well.
    user = clocked.server.state.user_order[0].id
    write = graph.patch(f"/users/{user}", json={"jobTitle": "Analyst"})
    assert write.status_code == 429
    assert write.headers["x-ms-throttle-scope"] == f"Tenant_Application/ReadWrite/{app}/{tenant}"
    clocked.clock.advance(4.0)
    assert graph.get("/users").status_code == 200
    stats = control.get("/stats").json()
    assert stats["reads_throttled"] == 1 and stats["throttled_responses"] == 2
    assert stats["reads_accepted"] == 4 and stats["resource_units_refused"] == 3


def test_auto_read_limit_from_tenant_size(clocked: ClockedSim) -> None:
    control, graph = clocked.control, clocked.graph
    control.post("/config", json={"read_limit": "auto"})
    batch = {"requests": [{"id": str(i), "method": "GET", "url": "/subscribedSkus"} for i in range(20)]}  # 60 RU
    statuses: list[int] = []
    for _ in range(84):
        statuses += [r["status"] for r in graph.post("/$batch", json=batch).json()["responses"]]
    # 60 users: a medium tenant, 5,000 RU per 10 s, so 1,666 reads of 3 RU fit (the clock stands still).
    assert statuses.count(200) == 1666 and statuses.count(429) == 84 * 20 - 1666


def test_batch_items_are_charged_one_by_one(clocked: ClockedSim) -> None:
    control, graph = clocked.control, clocked.graph
    control.post("/config", json={"read_limit": "4/10"})
    users = [u.id for u in clocked.server.state.user_order[:6]]
    requests = [{"id": str(i), "method": "GET", "url": f"/users/{u}"} for i, u in enumerate(users)]
    response = graph.post("/$batch", json={"requests": requests})
    assert response.status_code == 200
    items = {r["id"]: r for r in response.json()["responses"]}
    assert sorted(r["status"] for r in items.values()) == [200] * 4 + [429] * 2
    throttled = [r for r in items.values() if r["status"] == 429]
    assert all(r["headers"]["x-ms-throttle-information"] == "ResourceUnitLimitExceeded" for r in throttled)
    assert all(r["headers"]["x-ms-resource-unit"] == "1" for r in items.values())


def test_charged_refusals_over_http(clocked: ClockedSim) -> None:
    control, graph = clocked.control, clocked.graph
    users = [u.id for u in clocked.server.state.user_order if u.usage_location][:4]
    for charge_refused, retry_after in ((True, "1"), (False, "0.5")):
        control.post("/reset")
        control.post("/config", json={"write_limit": "1/1", "charge_refused": charge_refused})
        assert graph.patch(f"/users/{users[0]}", json={"jobTitle": "Analyst"}).status_code == 204
        clocked.clock.advance(0.5)
        refused = graph.patch(f"/users/{users[1]}", json={"jobTitle": "Analyst"})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == retry_after
        clocked.clock.advance(0.5)
        expected = 429 if charge_refused else 204
        assert graph.patch(f"/users/{users[2]}", json={"jobTitle": "Analyst"}).status_code == expected
    assert control.get("/config").json()["charge_refused"] is False
