"""Failed API key attempts, counted per client address and overall: guessing keys gets slow and loud.

An address with `per_address` failures in the last minute has its keys left unchecked (429) until
the oldest of them is a minute old. When all addresses together fail `total` times in a minute,
every address that failed in that minute waits likewise after a single failure (a guess spread
over many addresses), while addresses that have not failed are served as usual. The counts live
in this process: each API process counts its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from config import Settings

WINDOW_S = 60.0
# Addresses remembered at most; those whose failures are all older than the window go first.
MAX_ADDRESSES = 10_000


@dataclass(frozen=True)
class Failure:
    """What one failed attempt changed: whether it throttled its address, or every failing one."""

    address_throttled: bool
    all_throttled: bool


class FailedKeyAttempts:
    """Failed attempts per client address and in all, over a sliding minute."""

    def __init__(self, per_address: int, total: int, *, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, max_addresses: int = MAX_ADDRESSES) -> None:
        self.per_address = per_address
        self.total = total
        self.window_s = window_s
        self._clock = clock
        self._max_addresses = max_addresses
        self._by_address: dict[str, deque[float]] = {}
        self._all: deque[float] = deque(maxlen=total)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> FailedKeyAttempts:
        """The limits configured."""
        return cls(settings.auth_failures_per_address, settings.auth_failures_total)

    def wait_s(self, address: str) -> int:
        """Whole seconds before a key from `address` is checked again; 0 when it may be checked now."""
        with self._lock:
            now = self._clock()
            failures = self._by_address.get(address)
            if not failures:
                return 0
            limit = 1 if self._all_throttled(now) else self.per_address
            if len(failures) < limit:
                return 0
            return max(0, math.ceil(failures[-limit] + self.window_s - now))

    def failed(self, address: str) -> Failure:
        """Count a failed attempt from `address`."""
        with self._lock:
            now = self._clock()
            was_all = self._all_throttled(now)
            failures = self._by_address.pop(address, None) or deque(maxlen=self.per_address)
            self._by_address[address] = failures  # re-inserted: the dict's order is least recently failed first
            failures.append(now)
            self._all.append(now)
            self._forget_old(now)
            in_window = sum(1 for t in failures if now - t < self.window_s)
            return Failure(address_throttled=in_window == self.per_address,
                           all_throttled=not was_all and self._all_throttled(now))

    @property
    def remembered(self) -> int:
        """How many addresses are remembered (bounded by `max_addresses`)."""
        return len(self._by_address)

    def _all_throttled(self, now: float) -> bool:
        """Whether all addresses together failed `total` times within the window."""
        return len(self._all) == self.total and now - self._all[0] < self.window_s

    def _forget_old(self, now: float) -> None:
        """Drop addresses whose failures are all older than the window, once there are too many."""
        if len(self._by_address) <= self._max_addresses:
            return
        for address in [a for a, failures in self._by_address.items() if now - failures[-1] >= self.window_s]:
            del self._by_address[address]
        while len(self._by_address) > self._max_addresses:
            del self._by_address[next(iter(self._by_address))]
