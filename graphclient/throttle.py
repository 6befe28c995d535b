"""The per-tenant write throttle, shared in Redis by every worker process on every host.

One hash per tenant holds a token bucket for writes, a "paused until" gate and an adaptive rate.
All of it changes in one Lua script (throttle.lua), with the time passed in from the caller's clock
(wall-clock seconds, since several hosts share the state), so it is atomic and deterministic in tests.

How the rate adapts (AIMD, as TCP does):
- it starts at `safety` x the configured rate, so arrival-time jitter at Graph does not overflow
  Graph's own bucket; the bucket capacity scales with the effective rate;
- a 429 pauses every caller until its Retry-After, drops tokens already in the bucket, and
  multiplies the rate by DECREASE (once per congestion event, not once per in-flight 429);
- `x-ms-throttle-limit-percentage` >= 1.0 nudges the rate down by NUDGE (at most once a second);
  >= 0.8 holds it (no recovery) for HOLD_S;
- otherwise the rate recovers by RECOVER_PER_S of the configured rate each second, up to it.
This converges on a tenant's real headroom when other apps share the tenant-wide budget.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from graphclient.errors import ThrottleWaitTooLong
from graphclient.headers import header, parse_retry_after

if TYPE_CHECKING:
    from redis import Redis


log = logging.getLogger(__name__)

# Adaptive-rate constants; fractions of the configured (safety-adjusted) rate.
DECREASE = 0.85  # rate multiplier on a 429
FLOOR = 0.05  # never below 5 % of the configured rate
RECOVER_PER_S = 0.015  # +1.5 % of the configured rate per second without throttling signals
NUDGE = 0.97  # rate multiplier when Graph reports >= 100 % of its limit
NUDGE_INTERVAL_S = 1.0
HOLD_S = 2.0  # no recovery for this long after a limit percentage >= 0.8
DECREASE_COOLDOWN_S = 1.0  # after a pause ends, 429s of requests sent before it are not news
DEFAULT_PAUSE_S = 1.0  # a 429 without a usable Retry-After still pauses everyone this long
STATE_TTL_S = 7 * 86400  # idle tenants' state expires


@dataclass(frozen=True)
class ThrottleSnapshot:
    """The throttle's state at one moment, for progress reporting."""

    rate_per_s: float | None
    capacity: float | None
    tokens: float | None
    paused_until: float
    throttled_total: int


class Throttle(Protocol):
    """Where every Graph request asks for permission and reports what Graph said."""

    def acquire(self, writes: int) -> None:
        """Block until `writes` write tokens are granted and no pause is in force."""
        ...

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn from one response (or `$batch` item): 429s and the limit-percentage header."""
        ...

    def snapshot(self) -> ThrottleSnapshot:
        """The current state."""
        ...


@functools.cache
def _script_source() -> str:
    """The throttle's Lua script (a package file, read once)."""
    return resources.files("graphclient").joinpath("throttle.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class _Reply:
    verdict: str
    wait_s: float
    rate_per_s: float
    capacity: float
    tokens: float
    paused_until: float
    throttled_total: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _limit_fraction(value: str | None) -> float | None:
    """`x-ms-throttle-limit-percentage` as a fraction of the limit (documented as 0.8-1.8)."""
    if value is None:
        return None
    try:
        number = float(value.strip().rstrip("%"))
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    # Documented as a fraction; accept a percentage ("95") defensively.
    return number / 100.0 if number > 5.0 else number


def burst_headroom(batch_size: int, rate_per_s: float | None, jitter_s: float = 0.3) -> float:
    """Writes to leave free in Graph's bucket at the end of our initial burst.

    One full `$batch`, plus what latency jitter bunches together (`jitter_s` of the refill rate):
    without it the burst's last batches reach Graph just as its bucket runs dry and draw 429s
    (measured in the benchmark's ceiling scenario).
    """
    return batch_size + jitter_s * (rate_per_s or 0.0)


def _local_capacity(capacity: int, safety: float, headroom_writes: float) -> float:
    return max(capacity * 0.5, min(capacity * safety, capacity - headroom_writes))


class RedisThrottle:
    """A tenant's token bucket, pause gate and adaptive rate, kept in Redis and shared by all workers.

    `capacity`/`rate_per_s` are the configured write budget (None = unlimited: no bucket, but the
    pause gate and 429 handling still apply). Blocking waits use `sleep`; a wait longer than
    `max_inline_wait_s` raises ThrottleWaitTooLong instead.
    """

    def __init__(
        self,
        redis: Redis,
        tenant: str,
        *,
        capacity: int | None,
        rate_per_s: float | None,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        max_inline_wait_s: float,
        safety: float = 0.97,
        burst_headroom_writes: float = 0.0,
    ) -> None:
        """`clock` gives wall-clock seconds since the epoch (shared by hosts, unlike monotonic time).

        The local bucket holds `capacity × safety`, or less where that would leave fewer than
        `burst_headroom_writes` free in Graph's own bucket (never less than half of it).
        """
        if (capacity is None) != (rate_per_s is None):
            raise ValueError("capacity and rate_per_s must both be set or both be None")
        if capacity is not None and rate_per_s is not None and (capacity <= 0 or rate_per_s <= 0):
            raise ValueError("capacity and rate_per_s must be positive")
        if not 0 < safety <= 1:
            raise ValueError("safety must be in (0, 1]")
        self.key = f"bl:throttle:{tenant}"
        self.tenant = tenant
        self._limited = capacity is not None
        self._capacity = (
            _local_capacity(capacity, safety, burst_headroom_writes) if capacity is not None else 0.0
        )
        # The unlimited mode still keeps a nominal rate so the script's maths stay defined.
        self._max_rate = rate_per_s * safety if rate_per_s is not None else 1.0
        self._now = clock
        self._sleep = sleep
        self._max_inline_wait_s = max_inline_wait_s
        self._script = redis.register_script(_script_source())

    def _run(self, op: str, now: float, *, n: int = 0, arg: float = 0.0) -> _Reply:
        raw = self._script(
            keys=[self.key],
            args=[
                op,
                repr(now),
                n,
                repr(self._capacity),
                repr(self._max_rate),
                repr(self._max_inline_wait_s),
                repr(arg),
                DECREASE,
                FLOOR,
                RECOVER_PER_S,
                NUDGE,
                NUDGE_INTERVAL_S,
                HOLD_S,
                DECREASE_COOLDOWN_S,
                STATE_TTL_S,
            ],
        )
        verdict, wait_s, rate, capacity, tokens, paused_until, total = (_text(v) for v in raw)
        return _Reply(
            verdict=verdict,
            wait_s=float(wait_s),
            rate_per_s=float(rate),
            capacity=float(capacity),
            tokens=float(tokens),
            paused_until=float(paused_until),
            throttled_total=int(float(total)),
        )

    def acquire(self, writes: int) -> None:
        """Block until `writes` write tokens are reserved and no pause is in force (0 = gate only)."""
        pending = max(0, writes)
        while True:
            reply = self._run("acquire", self._now(), n=pending)
            if reply.verdict == "pause":
                if reply.wait_s > self._max_inline_wait_s:
                    raise ThrottleWaitTooLong(reply.wait_s)
                log.debug("tenant %s paused; waiting %.3fs", self.tenant, reply.wait_s)
                self._sleep(reply.wait_s)
                continue
            if reply.verdict == "long":
                raise ThrottleWaitTooLong(reply.wait_s)
            pending = 0  # reserved; later rounds only re-check the gate
            if reply.wait_s <= 0:
                return
            self._sleep(reply.wait_s)
            # Loop: a 429 seen by another worker while we waited must still hold us back.

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Learn from one response: a 429 pauses everyone and slows the rate; the limit header nudges."""
        if status == 429:
            now = self._now()
            retry_after_s = parse_retry_after(header(headers, "retry-after"), datetime.fromtimestamp(now, UTC))
            pause_s = DEFAULT_PAUSE_S if retry_after_s is None else retry_after_s
            reply = self._run("throttled", now, arg=pause_s)
            log.info(
                "tenant %s throttled (429 #%s); paused %.3fs, rate now %.2f/s",
                self.tenant,
                reply.throttled_total,
                pause_s,
                reply.rate_per_s,
            )
            return
        fraction = _limit_fraction(header(headers, "x-ms-throttle-limit-percentage"))
        if fraction is not None and fraction >= 0.8:
            self._run("percent", self._now(), arg=fraction)

    def snapshot(self) -> ThrottleSnapshot:
        """The current rate, tokens, pause and 429 count (read-only)."""
        reply = self._run("peek", self._now())
        return ThrottleSnapshot(
            rate_per_s=reply.rate_per_s if self._limited else None,
            capacity=reply.capacity if self._limited else None,
            tokens=reply.tokens if self._limited else None,
            paused_until=reply.paused_until,
            throttled_total=reply.throttled_total,
        )
