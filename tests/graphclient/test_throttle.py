"""The shared Redis throttle, on a real Redis with fake clocks: several processes, one limit."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from graphclient import throttle as throttle_module
from graphclient.errors import ThrottleWaitTooLong
from graphclient.throttle import RedisThrottle
from tests.fakes import FakeClock, RecordingSleep

T0 = 1_700_000_000.0
Factory = Callable[..., RedisThrottle]


@pytest.fixture
def make(redis_client: redis.Redis) -> Factory:
    def make(
        clock: FakeClock,
        *,
        capacity: int | None = 50,
        rate_per_s: float | None = 5.0,
        max_inline_wait_s: float = 30.0,
        safety: float = 1.0,
        tenant: str = "contoso",
    ) -> RedisThrottle:
        return RedisThrottle(
            redis_client,
            tenant,
            capacity=capacity,
            rate_per_s=rate_per_s,
            clock=clock,
            sleep=RecordingSleep(clock),
            max_inline_wait_s=max_inline_wait_s,
            safety=safety,
        )

    return make


def sleeps(t: RedisThrottle) -> list[float]:
    sleep = t._sleep
    assert isinstance(sleep, RecordingSleep)
    return sleep.intervals


def test_processes_share_one_limit_over_a_simulated_minute(make: Factory) -> None:
    """Four 'processes', each with its own clock, always run the one furthest behind."""
    capacity, rate = 50, 5.0
    clocks = [FakeClock(T0) for _ in range(4)]
    procs = [make(c, capacity=capacity, rate_per_s=rate, safety=0.97) for c in clocks]
    grants: list[float] = []
    while min(c.t for c in clocks) < T0 + 60:
        i = min(range(len(clocks)), key=lambda k: clocks[k].t)
        procs[i].acquire(1)
        grants.append(clocks[i].t)
        clocks[i].advance(0.01)  # the request's own latency
    in_minute = [g for g in grants if g <= T0 + 60]
    assert len(in_minute) <= capacity + rate * 60
    # ... and not far under it: the safety margin (3 %) is the only slack.
    assert len(in_minute) >= 0.97 * (capacity + rate * 60) - 2
    # No second of the minute (after the initial burst) gets more than the rate plus rounding.
    for second in range(11, 60):
        window = [g for g in in_minute if T0 + second <= g < T0 + second + 1]
        assert len(window) <= rate + 1
    assert sum(len(sleeps(p)) for p in procs) > 0


def test_a_request_larger_than_the_bucket_still_goes_and_leaves_a_debt(make: Factory, clock: FakeClock) -> None:
    t = make(clock, capacity=10, rate_per_s=1.0)
    t.acquire(20)  # bucket full: goes now, 10 in debt
    assert sleeps(t) == []
    t.acquire(1)  # waits the debt plus its own token
    assert sleeps(t) == [pytest.approx(11.0)]


def test_429_seen_by_one_process_pauses_all(make: Factory, redis_client: redis.Redis) -> None:
    a_clock, b_clock = FakeClock(T0), FakeClock(T0)
    a, b = make(a_clock), make(b_clock)
    a.observe(429, {"Retry-After": "5"})
    b.acquire(1)
    assert sleeps(b) == [5.0]
    a_clock.advance(1.0)
    a.acquire(0)  # reads wait at the gate too
    assert sleeps(a) == [4.0]
    # A shorter Retry-After never shortens the pause; a longer one extends it.
    b.observe(429, {"retry-after": "1"})
    b.observe(429, {"retry-after": "2.5"})
    assert b.snapshot().paused_until == pytest.approx(b_clock.t + 2.5)
    assert b.snapshot().throttled_total == 3
    assert redis_client.exists("bl:throttle:contoso")
    assert 0 < redis_client.ttl("bl:throttle:contoso") <= throttle_module.STATE_TTL_S


def test_http_date_retry_after_and_missing_header(make: Factory, clock: FakeClock) -> None:
    t = make(clock)
    clock.t = 1445412450.0  # Wed, 21 Oct 2015 07:27:30 GMT
    t.observe(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert t.snapshot().paused_until == pytest.approx(clock.t + 30.0)
    clock.advance(60)
    t.observe(429, {})
    assert t.snapshot().paused_until == pytest.approx(clock.t + throttle_module.DEFAULT_PAUSE_S)


def test_long_pause_raises_instead_of_sleeping(make: Factory, clock: FakeClock) -> None:
    t = make(clock, max_inline_wait_s=30.0)
    t.observe(429, {"Retry-After": "300"})
    with pytest.raises(ThrottleWaitTooLong) as info:
        t.acquire(1)
    assert info.value.wait_s == pytest.approx(300.0)
    assert sleeps(t) == []


def test_long_bucket_wait_raises_without_reserving(make: Factory, clock: FakeClock) -> None:
    t = make(clock, capacity=10, rate_per_s=1.0, max_inline_wait_s=5.0)
    t.acquire(10)
    with pytest.raises(ThrottleWaitTooLong) as info:
        t.acquire(10)
    assert info.value.wait_s == pytest.approx(10.0)
    t.acquire(1)  # the refused request took nothing
    assert sleeps(t) == [pytest.approx(1.0)]


def test_rate_drops_on_429_and_recovers_when_they_stop(make: Factory, clock: FakeClock) -> None:
    t = make(clock, capacity=100, rate_per_s=10.0, safety=0.97)
    max_rate = 10.0 * 0.97
    assert t.snapshot().rate_per_s == pytest.approx(max_rate)
    assert t.snapshot().capacity == pytest.approx(97.0)

    t.observe(429, {"Retry-After": "2"})
    after_one = max_rate * 0.85
    snap = t.snapshot()
    assert snap.rate_per_s == pytest.approx(after_one)
    assert snap.tokens == 0.0
    assert snap.capacity == pytest.approx(97.0 * 0.85)
    # More 429s from requests already in flight: counted, but one congestion event, one decrease.
    t.observe(429, {"Retry-After": "2"})
    assert t.snapshot().rate_per_s == pytest.approx(after_one)
    assert t.snapshot().throttled_total == 2

    # No recovery while paused; then +1.5 % of the configured rate per second.
    clock.advance(2.0)
    assert t.snapshot().rate_per_s == pytest.approx(after_one)
    clock.advance(1.0)
    assert t.snapshot().rate_per_s == pytest.approx(after_one + 0.015 * max_rate)

    # A new 429 after the pause and the cooldown is a new event: another decrease.
    t.observe(429, {"Retry-After": "1"})
    twice = (after_one + 0.015 * max_rate) * 0.85
    assert t.snapshot().rate_per_s == pytest.approx(twice)

    clock.advance(1.0 + 10.0)
    assert t.snapshot().rate_per_s == pytest.approx(twice + 10 * 0.015 * max_rate)
    clock.advance(3600)
    assert t.snapshot().rate_per_s == pytest.approx(max_rate)  # never above the configured rate


def test_rate_has_a_floor(make: Factory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle_module, "RECOVER_PER_S", 0.0)  # isolate the decrease
    t = make(clock, capacity=100, rate_per_s=10.0)
    for _ in range(40):
        t.observe(429, {"Retry-After": "0"})
        clock.advance(throttle_module.DECREASE_COOLDOWN_S)
    assert t.snapshot().rate_per_s == pytest.approx(10.0 * throttle_module.FLOOR)


def test_a_slower_rate_spaces_the_grants(make: Factory, clock: FakeClock) -> None:
    t = make(clock, capacity=4, rate_per_s=4.0)
    t.observe(429, {"Retry-After": "0"})  # rate 3.4/s, bucket emptied
    for _ in range(3):
        t.acquire(1)
    first, *later = sleeps(t)
    assert first == pytest.approx(1 / 3.4)
    # The rate creeps back up meanwhile (+1.5 %/s), so later gaps shrink slightly, never below 1/4 s.
    assert all(1 / 4.0 < gap < first for gap in later)


def test_limit_percentage_slows_and_holds(make: Factory, clock: FakeClock) -> None:
    t = make(clock, capacity=100, rate_per_s=10.0)
    t.observe(200, {"x-ms-throttle-limit-percentage": "0.5"})  # below 0.8: ignored
    t.observe(200, {"x-ms-throttle-limit-percentage": "1.2"})
    assert t.snapshot().rate_per_s == pytest.approx(10.0 * 0.97)
    t.observe(200, {"x-ms-throttle-limit-percentage": "1.2"})  # within a second: no second nudge
    assert t.snapshot().rate_per_s == pytest.approx(10.0 * 0.97)
    clock.advance(1.0)
    t.observe(200, {"X-Ms-Throttle-Limit-Percentage": "1.0"})
    nudged = 10.0 * 0.97 * 0.97
    assert t.snapshot().rate_per_s == pytest.approx(nudged)
    # Between 0.8 and 1.0 the rate holds: no recovery while Graph says we are close.
    for _ in range(5):
        clock.advance(1.0)
        t.observe(200, {"x-ms-throttle-limit-percentage": "0.85"})
        assert t.snapshot().rate_per_s == pytest.approx(nudged)
    assert t.snapshot().throttled_total == 0
    # Once the header stops, the hold lapses and the rate recovers.
    clock.advance(throttle_module.HOLD_S + 2.0)
    assert t.snapshot().rate_per_s == pytest.approx(nudged + 2.0 * 0.015 * 10.0)


def test_unlimited_profile_has_no_bucket_but_keeps_the_gate(make: Factory, clock: FakeClock) -> None:
    t = make(clock, capacity=None, rate_per_s=None)
    for _ in range(1000):
        t.acquire(20)
    assert sleeps(t) == []
    t.observe(429, {"Retry-After": "3"})
    t.acquire(1)
    assert sleeps(t) == [3.0]
    snap = t.snapshot()
    assert (snap.rate_per_s, snap.capacity, snap.tokens, snap.throttled_total) == (None, None, None, 1)


def test_tenants_are_independent(make: Factory, clock: FakeClock) -> None:
    a = make(clock, tenant="contoso")
    b = make(clock, tenant="fabrikam")
    a.observe(429, {"Retry-After": "10"})
    b.acquire(1)
    assert sleeps(b) == []
    assert b.snapshot().throttled_total == 0


def test_snapshot_does_not_consume(make: Factory, clock: FakeClock) -> None:
    t = make(clock, capacity=10, rate_per_s=1.0)
    t.acquire(4)
    assert t.snapshot().tokens == pytest.approx(6.0)
    assert t.snapshot().tokens == pytest.approx(6.0)
    clock.advance(2.0)
    assert t.snapshot().tokens == pytest.approx(8.0)


def test_plain_callable_clock_is_accepted(redis_client: redis.Redis, clock: FakeClock) -> None:
    t = RedisThrottle(
        redis_client,
        "contoso",
        capacity=10,
        rate_per_s=1.0,
        clock=lambda: clock.t,
        sleep=RecordingSleep(clock),
        max_inline_wait_s=30.0,
    )
    t.acquire(10)  # the bucket holds 9.7 (safety 0.97): goes at once, 0.3 in debt
    t.acquire(1)
    assert sleeps(t) == [pytest.approx(1.3 / 0.97)]


def test_invalid_configuration(redis_client: redis.Redis, clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        RedisThrottle(
            redis_client,
            "x",
            capacity=10,
            rate_per_s=None,
            clock=clock,
            sleep=RecordingSleep(clock),
            max_inline_wait_s=1.0,
        )


def test_converges_on_hidden_headroom(make: Factory) -> None:
    """Graph's real limit is half the configured one (other apps use the rest): few 429s, little waste."""
    real_capacity, real_rate, seconds, latency_s = 50, 10.0, 120.0, 0.1
    clocks = [FakeClock(T0) for _ in range(5)]
    procs = [make(c, capacity=100, rate_per_s=20.0, safety=0.97, max_inline_wait_s=1e9) for c in clocks]
    graph_tokens, graph_ts = float(real_capacity), T0
    accepted = throttled = 0
    while min(c.t for c in clocks) < T0 + seconds:
        i = min(range(len(clocks)), key=lambda k: clocks[k].t)
        procs[i].acquire(1)
        arrival = clocks[i].t + latency_s / 2
        if arrival > graph_ts:
            graph_tokens = min(real_capacity, graph_tokens + (arrival - graph_ts) * real_rate)
            graph_ts = arrival
        clocks[i].advance(latency_s)
        if graph_tokens >= 1:
            graph_tokens -= 1
            accepted += 1
            procs[i].observe(200, {})
        else:
            throttled += 1
            procs[i].observe(429, {"Retry-After": "1"})
    ideal = real_capacity + real_rate * seconds
    assert accepted >= 0.9 * ideal
    assert throttled <= 0.03 * (accepted + throttled)
    learned = procs[0].snapshot().rate_per_s
    assert learned is not None and learned < 0.8 * 20.0  # it learned the tenant's real headroom


def test_the_initial_burst_leaves_headroom_in_graphs_bucket(redis_client: redis.Redis, clock: FakeClock,
                                                            sleep: RecordingSleep) -> None:
    from graphclient.throttle import burst_headroom

    headroom = burst_headroom(20, 100.0)
    assert headroom == 50.0  # one $batch + 0.3 s of refill
    t = RedisThrottle(redis_client, "burst", capacity=500, rate_per_s=100.0, clock=clock, sleep=sleep,
                      max_inline_wait_s=60.0, burst_headroom_writes=headroom)
    granted = 0
    while not sleep.intervals:
        t.acquire(10)
        granted += 10
    assert granted - 10 == 450  # the burst stops 50 writes short of Graph's 500
    # Graph's documented 3,000/150 s: the 3 % safety margin already leaves more than the headroom.
    big = RedisThrottle(redis_client, "graph", capacity=3000, rate_per_s=20.0, clock=clock, sleep=sleep,
                        max_inline_wait_s=60.0, burst_headroom_writes=burst_headroom(20, 20.0))
    assert big.snapshot().capacity == 3000 * 0.97
