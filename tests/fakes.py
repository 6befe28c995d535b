"""Fakes shared by the unit tests: a settable clock, a recording sleep, a recording throttle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from graphclient.throttle import ThrottleSnapshot


@dataclass
class FakeClock:
    """Wall-clock seconds that only move when told to."""

    t: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class RecordingSleep:
    """A sleep that records each interval and advances a fake clock instead of sleeping."""

    clock: FakeClock
    intervals: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.intervals.append(seconds)
        self.clock.advance(seconds)


@dataclass
class RecordingThrottle:
    """A Throttle that grants everything and records what it was asked and told."""

    acquired: list[int] = field(default_factory=list)
    observed: list[tuple[int, dict[str, str]]] = field(default_factory=list)

    def acquire(self, writes: int) -> None:
        self.acquired.append(writes)

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self.observed.append((status, {k.lower(): v for k, v in headers.items()}))

    def snapshot(self) -> ThrottleSnapshot:
        return ThrottleSnapshot(None, None, None, 0.0, sum(1 for s, _ in self.observed if s == 429))
