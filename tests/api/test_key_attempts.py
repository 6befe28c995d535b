"""Failed API key attempts over a sliding minute: per address, and all addresses together."""

from __future__ import annotations

from api.key_attempts import FailedKeyAttempts
from tests.fakes import FakeClock


def test_an_address_waits_until_its_oldest_failure_of_the_window_is_a_minute_old() -> None:
    clock = FakeClock()
    attempts = FailedKeyAttempts(per_address=3, total=100, clock=clock)
    for second in (0, 10, 20):
        clock.t = 1000.0 + second
        assert attempts.wait_s("198.51.100.7") == 0
        failure = attempts.failed("198.51.100.7")
    assert failure.address_throttled and not failure.all_throttled
    assert attempts.wait_s("198.51.100.7") == 40  # the failure at 0 s ages out at 60 s
    assert attempts.wait_s("203.0.113.1") == 0  # another address is not concerned
    clock.t = 1059.5
    assert attempts.wait_s("198.51.100.7") == 1
    clock.t = 1060.0
    assert attempts.wait_s("198.51.100.7") == 0  # one more try; a failure then waits for the one at 10 s
    attempts.failed("198.51.100.7")
    assert attempts.wait_s("198.51.100.7") == 10


def test_many_failing_addresses_each_wait_after_one_failure() -> None:
    clock = FakeClock()
    attempts = FailedKeyAttempts(per_address=10, total=5, clock=clock)
    failures = [attempts.failed(f"192.0.2.{n}") for n in range(5)]
    assert [f.all_throttled for f in failures] == [False] * 4 + [True]  # said once, when it starts
    assert all(attempts.wait_s(f"192.0.2.{n}") == 60 for n in range(5))
    assert attempts.wait_s("203.0.113.1") == 0  # an address that has not failed is served as usual
    clock.advance(60)
    assert all(attempts.wait_s(f"192.0.2.{n}") == 0 for n in range(5))


def test_addresses_are_forgotten_once_too_many_and_idle() -> None:
    clock = FakeClock()
    attempts = FailedKeyAttempts(per_address=2, total=10_000, clock=clock, max_addresses=3)
    for n in range(3):
        attempts.failed(f"192.0.2.{n}")
    clock.advance(61)
    attempts.failed("192.0.2.200")  # four remembered: the idle three go
    assert attempts.wait_s("192.0.2.0") == 0
    for n in range(10):  # none idle: the least recently failed go first, so memory stays bounded
        attempts.failed(f"198.51.100.{n}")
    assert attempts.remembered <= 3
