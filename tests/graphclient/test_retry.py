"""The retry policy: Retry-After parsing, waits, caps, and the pure functions the executor shares."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from config.settings import Settings
from graphclient.errors import GraphError, GraphPermanentError, GraphThrottled, GraphTransientError, ThrottleWaitTooLong
from graphclient.headers import parse_retry_after
from graphclient.retry import RetryPolicy, full_jitter_s, is_retryable
from tests.fakes import FakeClock, RecordingSleep

NOW = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)


def policy(**overrides: float) -> RetryPolicy:
    values: dict[str, float] = {
        "max_attempts": 8,
        "max_total_s": 3600.0,
        "backoff_base_s": 1.0,
        "backoff_max_s": 60.0,
    }
    values.update(overrides)
    return RetryPolicy(
        max_attempts=int(values["max_attempts"]),
        max_total_s=values["max_total_s"],
        backoff_base_s=values["backoff_base_s"],
        backoff_max_s=values["backoff_max_s"],
        max_inline_wait_s=values.get("max_inline_wait_s"),
    )


class Script:
    """A callable that raises the scripted errors in turn, then returns "ok"; optionally takes time."""

    def __init__(self, *errors: GraphError, clock: FakeClock | None = None, duration_s: float = 0.0) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.clock = clock
        self.duration_s = duration_s

    def __call__(self) -> str:
        self.calls += 1
        if self.clock is not None:
            self.clock.advance(self.duration_s)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def run(p: RetryPolicy, fn: Callable[[], str], sleep: RecordingSleep, **kwargs: object) -> str:
    return p.call(fn, sleep=sleep, clock=sleep.clock, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2.128", 2.128),
        ("0.249", 0.249),
        ("10", 10.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # already past: retry now
        ("-5", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_naive_now_is_utc() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW.replace(tzinfo=None)) == 30.0


def test_fractional_retry_after_is_honoured_exactly(sleep: RecordingSleep) -> None:
    fn = Script(GraphThrottled("429", retry_after_s=0.249), GraphThrottled("429", retry_after_s=2.128))
    assert run(policy(), fn, sleep) == "ok"
    assert sleep.intervals == [0.249, 2.128]
    assert fn.calls == 3


def test_http_date_retry_after_through_the_parser(sleep: RecordingSleep) -> None:
    retry_after_s = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW)
    fn = Script(GraphThrottled("429", retry_after_s=retry_after_s))
    assert run(policy(), fn, sleep) == "ok"
    assert sleep.intervals == [30.0]


def test_exponential_backoff_with_full_jitter_and_seeded_rng(sleep: RecordingSleep) -> None:
    fn = Script(*[GraphTransientError("503", status=503) for _ in range(7)])
    assert run(policy(backoff_base_s=0.5, backoff_max_s=10.0), fn, sleep, rng=random.Random(7)) == "ok"
    expected_rng = random.Random(7)
    caps = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert sleep.intervals == [expected_rng.uniform(0.0, cap) for cap in caps]
    assert all(0 <= s <= cap for s, cap in zip(sleep.intervals, caps, strict=True))


def test_throttled_without_retry_after_backs_off(sleep: RecordingSleep) -> None:
    fn = Script(GraphThrottled("429 no header"))
    run(policy(), fn, sleep, rng=random.Random(1))
    assert sleep.intervals == [random.Random(1).uniform(0.0, 1.0)]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_permanent_errors_are_not_retried(sleep: RecordingSleep, status: int) -> None:
    error = GraphPermanentError("nope", status=status)
    fn = Script(error)
    with pytest.raises(GraphPermanentError) as info:
        run(policy(), fn, sleep)
    assert info.value is error
    assert fn.calls == 1
    assert sleep.intervals == []


def test_attempt_cap_reraises_the_last_error(sleep: RecordingSleep) -> None:
    errors = [GraphTransientError(f"503 #{i}", status=503, retry_after_s=1.0) for i in range(5)]
    fn = Script(*errors)
    with pytest.raises(GraphTransientError) as info:
        run(policy(max_attempts=3), fn, sleep)
    assert info.value is errors[2]
    assert fn.calls == 3
    assert sleep.intervals == [1.0, 1.0]


def test_total_time_cap_counts_call_time_and_refuses_a_wait_past_it(clock: FakeClock) -> None:
    sleep = RecordingSleep(clock)
    errors = [GraphThrottled("429", retry_after_s=4.0) for _ in range(10)]
    fn = Script(*errors, clock=clock, duration_s=0.5)
    with pytest.raises(GraphThrottled) as info:
        run(policy(max_total_s=10.0), fn, sleep)
    # elapsed 0.5 + 4 < 10 -> wait; 5 + 4 < 10 -> wait; 9.5 + 4 >= 10 -> stop.
    assert sleep.intervals == [4.0, 4.0]
    assert fn.calls == 3
    assert info.value is errors[2]


def test_transient_then_success(sleep: RecordingSleep) -> None:
    fn = Script(GraphTransientError("reset", ambiguous=True, retry_after_s=0.5))
    assert run(policy(), fn, sleep) == "ok"
    assert fn.calls == 2
    assert sleep.intervals == [0.5]


def test_ambiguous_failure_can_be_handed_to_the_caller(sleep: RecordingSleep) -> None:
    fn = Script(GraphTransientError("read timeout", ambiguous=True))
    with pytest.raises(GraphTransientError):
        run(policy(), fn, sleep, retry_ambiguous=False)
    assert fn.calls == 1
    assert sleep.intervals == []


def test_long_retry_after_is_handed_back_not_slept(sleep: RecordingSleep) -> None:
    error = GraphThrottled("429", retry_after_s=300.0)
    fn = Script(error)
    with pytest.raises(ThrottleWaitTooLong) as info:
        run(policy(max_inline_wait_s=30.0), fn, sleep)
    assert info.value.wait_s == 300.0
    assert info.value.__cause__ is error
    assert sleep.intervals == []


def test_full_jitter_is_uniform_up_to_the_doubling_cap() -> None:
    rng, expected = random.Random(5), random.Random(5)
    waits = [full_jitter_s(n, base_s=0.5, cap_s=3.0, rng=rng) for n in (1, 2, 3, 4, 5)]
    assert waits == [expected.uniform(0.0, cap) for cap in (0.5, 1.0, 2.0, 3.0, 3.0)]


class Bounds(random.Random):
    """An RNG whose uniform(a, b) is b: the top of each jitter interval, to assert the caps exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_full_jitter_caps_exactly_and_survives_huge_attempt_counts() -> None:
    caps = [full_jitter_s(n, base_s=0.25, cap_s=8.0, rng=Bounds()) for n in (0, 1, 2, 3, 4, 5, 6, 7, 10_000)]
    assert caps == [0.25, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_prefers_retry_after_over_jitter() -> None:
    p = policy(backoff_base_s=0.5, backoff_max_s=10.0)
    assert p.backoff_s(3, GraphThrottled("429", retry_after_s=2.128), Bounds()) == 2.128
    assert p.backoff_s(1, GraphTransientError("503", retry_after_s=0.0), Bounds()) == 0.0
    assert p.backoff_s(3, GraphThrottled("429 without Retry-After"), Bounds()) == 2.0
    assert p.backoff_s(4, GraphTransientError("reset", ambiguous=True), Bounds()) == 4.0


def test_the_executor_loop_and_call_wait_the_same_intervals(sleep: RecordingSleep) -> None:
    p = policy(backoff_base_s=0.5, backoff_max_s=10.0)
    transient = GraphTransientError("503")
    rng = random.Random(11)
    loop = [p.backoff_s(n, transient, rng) for n in (1, 2, 3)]
    run(p, Script(transient, transient, transient), sleep, rng=random.Random(11))
    expected = random.Random(11)
    assert loop == sleep.intervals == [expected.uniform(0.0, cap) for cap in (0.5, 1.0, 2.0)]


def test_may_retry_checks_attempts_and_total_time() -> None:
    p = policy(max_attempts=3, max_total_s=100.0)
    assert p.may_retry(1, 0.0)
    assert p.may_retry(2, 99.9)
    assert not p.may_retry(3, 0.0)  # the third attempt was the last
    assert not p.may_retry(1, 100.0)  # budget spent
    assert p.may_retry(1, 90.0, wait_s=9.9)
    assert not p.may_retry(1, 90.0, wait_s=10.0)  # the wait would use up the budget


def test_waits_inline_up_to_the_limit() -> None:
    assert policy(max_inline_wait_s=30.0).waits_inline(30.0)
    assert not policy(max_inline_wait_s=30.0).waits_inline(30.001)
    assert policy().waits_inline(1e9)  # no limit set


@pytest.mark.parametrize(
    ("error", "retry_ambiguous", "expected"),
    [
        (GraphThrottled("429"), True, True),
        (GraphTransientError("503", status=503), False, True),
        (GraphTransientError("timeout", ambiguous=True), True, True),
        (GraphTransientError("timeout", ambiguous=True), False, False),
        (GraphPermanentError("400", status=400), True, False),
        (GraphError("no response for the item", ambiguous=True), True, False),
        (ValueError("a bug"), True, False),
    ],
)
def test_is_retryable(error: BaseException, retry_ambiguous: bool, expected: bool) -> None:
    assert is_retryable(error, retry_ambiguous=retry_ambiguous) is expected


def test_from_settings() -> None:
    settings = Settings(
        retry_max_attempts=5,
        retry_max_total_s=120.0,
        retry_backoff_base_s=0.25,
        retry_backoff_max_s=8.0,
        max_inline_wait_s=20.0,
    )
    assert RetryPolicy.from_settings(settings) == RetryPolicy(5, 120.0, 0.25, 8.0, 20.0)
