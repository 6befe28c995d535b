"""Write throttling: token buckets (with a fake clock) and 429s from the server."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from graphsim.config import SimConfig, WriteLimit, parse_write_limit
from graphsim.server import SimServer
from graphsim.throttle import TokenBucket, WriteThrottler, format_retry_after
from tests.fakes import FakeClock
from tests.graphsim.helpers import assign_body

# A small start keeps float sums of fake seconds exact to well below the bucket's 1e-9 tolerance.
CLOCK_START = 1000.0


def test_bucket_starts_full_and_refills() -> None:
    clock = FakeClock(CLOCK_START)
    bucket = TokenBucket(WriteLimit(3000, 150.0), clock)
    for _ in range(3000):
        assert bucket.wait_s() == 0
        bucket.take()
    assert abs(bucket.wait_s() - 0.05) < 1e-9  # 20 tokens/s: one token in 50 ms
    clock.advance(0.05)
    assert bucket.wait_s() == 0


def test_throttler_scopes_and_tenant_bucket() -> None:
    clock = FakeClock(CLOCK_START)
    throttler = WriteThrottler("t", WriteLimit(2, 1.0), WriteLimit(3, 3.0), clock)
    assert not throttler.charge("a").throttled
    assert not throttler.charge("a").throttled
    first = throttler.charge("a")
    assert first.throttled and first.scope == "Tenant_Application/Write/a/t"
    assert first.retry_after_s is not None and abs(first.retry_after_s - 0.5) < 1e-9
    assert not throttler.charge("b").throttled  # b has its own app bucket; the tenant's 3rd token
    second = throttler.charge("b")
    assert second.scope == "Tenant/Write/b/t" and second.retry_after_s is not None
    assert abs(second.retry_after_s - 1.0) < 1e-9
    unlimited = WriteThrottler("t", None, None, clock)
    assert not any(unlimited.charge("a").throttled for _ in range(10_000))


def test_limit_parsing_and_retry_after_format() -> None:
    assert parse_write_limit("3000/150") == WriteLimit(3000, 150.0)
    assert parse_write_limit("none") is None
    assert format_retry_after(2.1281) == "2.129"
    assert format_retry_after(10) == "10"


def _write(graph: httpx.Client, user: str) -> httpx.Response:
    return graph.post(f"/users/{user}/assignLicense", json=assign_body(["FLOW_FREE"]))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(CLOCK_START)


@pytest.fixture
def clocked_sim(clock: FakeClock) -> Iterator[SimServer]:
    """A simulator whose write buckets run on the test's clock: 5 writes per 0.5 s, no tenant bucket."""
    config = SimConfig(users=20, seed=1, write_limit=WriteLimit(5, 0.5), tenant_write_limit=None, clock=clock)
    with SimServer(config) as server:
        yield server


def test_burst_gets_429_and_retry_after_honoured_succeeds(clocked_sim: SimServer, clock: FakeClock) -> None:
    sim = clocked_sim
    headers = {"Authorization": f"Bearer {sim.issue_token()}"}
    with httpx.Client(base_url=f"{sim.graph_url}/v1.0", verify=ssl.create_default_context(cafile=sim.ca_path),
                      headers=headers, timeout=10) as graph:
        users = [u.id for u in sim.state.user_order if u.usage_location][:8]
        responses = [_write(graph, u) for u in users]
        # The clock stands still: the bucket empties after 5 writes and does not refill.
        assert [r.status_code for r in responses] == [200] * 5 + [429] * 3
        throttled = responses[5]
        retry_after_s = float(throttled.headers["Retry-After"])
        assert retry_after_s == 0.1  # one token at 10 tokens/s
        assert throttled.headers["x-ms-throttle-scope"].startswith("Tenant_Application/Write/")
        assert throttled.headers["x-ms-throttle-information"] == "WriteLimitExceeded"
        error = throttled.json()["error"]
        assert error["code"] == "TooManyRequests" and error["message"] == "Please retry again later."
        assert responses[4].headers.get("x-ms-throttle-limit-percentage") is not None
        # Just short of Retry-After the write is still refused, and (refused requests still cost) the
        # early retry spends what had refilled: the wait starts again. Waiting it out goes through.
        clock.advance(retry_after_s - 0.01)
        early = _write(graph, users[5])
        assert early.status_code == 429 and float(early.headers["Retry-After"]) == pytest.approx(0.1, abs=1e-3)
        clock.advance(float(early.headers["Retry-After"]))
        assert _write(graph, users[5]).status_code == 200


def test_traffic_under_the_limit_is_not_throttled(sim: SimServer, graph: httpx.Client,
                                                  control: httpx.Client) -> None:
    control.post("/config", json={"write_limit": "5/1"})
    users = [u.id for u in sim.state.user_order if u.usage_location][:5]
    assert [_write(graph, u).status_code for u in users] == [200] * 5
    # Reads never spend write tokens.
    assert all(graph.get("/users?$top=1").status_code == 200 for _ in range(10))
    stats = control.get("/stats").json()
    assert stats["throttled_responses"] == 0 and stats["writes_accepted"] == 5
    assert stats["peak_writes_per_s"] >= 1 and sum(stats["writes_per_s"]) == 5


def test_force_429_for_one_user(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    target, other = [u for u in sim.state.user_order if u.usage_location][:2]
    control.post("/config", json={"force_429": {"count": 2, "retry_after_s": 300, "user": target.upn}})
    assert _write(graph, other.id).status_code == 200
    first = _write(graph, target.id)
    assert first.status_code == 429 and first.headers["Retry-After"] == "300"
    assert _write(graph, target.upn).status_code == 429
    assert _write(graph, target.id).status_code == 200
    assert control.get("/config").json()["force_429"] is None


def test_unlimited(sim: SimServer, graph: httpx.Client, control: httpx.Client) -> None:
    control.post("/config", json={"write_limit": "none", "tenant_write_limit": "none"})
    users = [u.id for u in sim.state.user_order if u.usage_location][:30]
    assert all(_write(graph, u).status_code == 200 for u in users)
    assert control.post("/config", json={"write_limit": "bogus"}).status_code == 400
