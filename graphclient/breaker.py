"""The per-tenant circuit breaker: when Graph stops answering a tenant, stop calling it and probe slowly.

It stands beside the throttle and, like it, is shared in Redis by every worker process on every host:
one hash per tenant, changed only by one Lua script (breaker.lua), with times from the caller's
wall clock. Every Graph call asks `admit` before it is sent and reports how it went with `record`.

A call *fails* for the breaker when Graph gave no usable answer: the connection was refused, reset
or closed without a response, it timed out, the identity platform was unreachable, or Graph
answered 5xx. Any other answer, 4xx and 429 included, is a *success*: Graph is there, and what it
said is the caller's business.

    CLOSED      calls go out. It OPENS after FAILURES_TO_OPEN failed calls in a row (no success in
                between, from any worker) that were at least DISTINCT_TO_OPEN different requests:
                one request failing again and again is that request's trouble, not Graph's.
    OPEN        no call goes out (GraphUnavailable) until the next probe time. Then one caller across
                all workers takes the probe lease (SET NX, expiring after the request timeout) and its
                call goes out: HALF-OPEN.
    probe ok    CLOSED. Only the probe's answer closes it: an answer to a call sent before the breaker
                opened says nothing about now.
    probe fails OPEN again; the next probe waits twice as long: 2, 4, 8, 16, 30, 30 ... s.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

from graphclient.errors import GraphUnavailable

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

FAILURES_TO_OPEN = 5
DISTINCT_TO_OPEN = 3
FIRST_PROBE_S = 2.0
MAX_PROBE_S = 30.0
STATE_TTL_S = 7 * 86400  # idle tenants' state expires
_MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Admission:
    """Leave for one call to go out; `probe` holds the lease token when the call is the half-open probe."""

    probe: str = ""


@dataclass(frozen=True)
class BreakerState:
    """A tenant's breaker at one moment."""

    tenant: str
    open: bool
    next_probe_at: float | None
    opened_at: float | None
    failures_in_row: int
    opens_total: int
    last_error: str

    @property
    def message(self) -> str:
        """Why calls are held back, for a paused job and for GraphUnavailable."""
        since = datetime.fromtimestamp(self.opened_at or 0, UTC).strftime("%H:%M:%SZ")
        text = f"Graph does not answer for tenant profile '{self.tenant}' (since {since})"
        return f"{text}: {self.last_error}" if self.last_error else text


class Breaker(Protocol):
    """Where every Graph call asks leave to go out and says whether Graph answered."""

    def admit(self) -> Admission:
        """Leave to send one call; GraphUnavailable while the breaker is open (and it is not probe time)."""
        ...

    def record(self, admission: Admission, *, answered: bool, request: str = "", error: str = "") -> None:
        """How an admitted call went: `answered` unless it failed as described in the module docstring.

        `request` names what was sent (the same string for a resend), `error` says what went wrong.
        """
        ...

    def state(self) -> BreakerState:
        """The current state (read-only)."""
        ...


class AlwaysClosed:
    """A breaker that never opens (tests and tools that talk to Graph without one)."""

    def admit(self) -> Admission:
        """Always leave to go."""
        return Admission()

    def record(self, admission: Admission, *, answered: bool, request: str = "", error: str = "") -> None:
        """Nothing to learn."""

    def state(self) -> BreakerState:
        """Always closed."""
        return BreakerState("", False, None, None, 0, 0, "")


ALWAYS_CLOSED = AlwaysClosed()


@functools.cache
def _script_source() -> str:
    """The breaker's Lua script (a package file, read once)."""
    return resources.files("graphclient").joinpath("breaker.lua").read_text(encoding="utf-8")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBreaker:
    """A tenant's circuit breaker, kept in Redis and shared by all workers (rules in the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        tenant: str,
        *,
        clock: Callable[[], float],
        probe_lease_s: float,
        failures_to_open: int = FAILURES_TO_OPEN,
        distinct_to_open: int = DISTINCT_TO_OPEN,
        first_probe_s: float = FIRST_PROBE_S,
        max_probe_s: float = MAX_PROBE_S,
    ) -> None:
        """`clock` gives wall-clock seconds (shared by hosts); a probe lease outlives a probe by `probe_lease_s`."""
        if failures_to_open < distinct_to_open or distinct_to_open < 1:
            raise ValueError("need 1 <= distinct_to_open <= failures_to_open")
        if not 0 < first_probe_s <= max_probe_s:
            raise ValueError("need 0 < first_probe_s <= max_probe_s")
        self.tenant = tenant
        self.failures_to_open = failures_to_open
        self.key = f"bl:breaker:{tenant}"
        self._keys = [self.key, f"{self.key}:streak", f"{self.key}:probe"]
        self._now = clock
        self._constants: list[str | int] = [failures_to_open, distinct_to_open, repr(first_probe_s), repr(max_probe_s),
                           int(probe_lease_s * 1000), STATE_TTL_S]
        self._script = redis.register_script(_script_source())

    def _run(self, op: str, *, request: str = "", token: str = "", error: str = "") -> tuple[str, BreakerState]:
        raw = self._script(keys=self._keys, args=[op, repr(self._now()), request, token, error, *self._constants])
        verdict, state, next_probe_at, opened_at, failures, opens, last_error = (_text(v) for v in raw)
        is_open = state == "open"
        return verdict, BreakerState(
            tenant=self.tenant,
            open=is_open,
            next_probe_at=float(next_probe_at) if is_open else None,
            opened_at=float(opened_at) if is_open else None,
            failures_in_row=int(float(failures)),
            opens_total=int(float(opens)),
            last_error=last_error,
        )

    def admit(self) -> Admission:
        """Leave to send one call; GraphUnavailable while open, except for the one caller that probes."""
        token = uuid.uuid4().hex
        verdict, state = self._run("admit", token=token)
        if verdict == "ok":
            return Admission()
        if verdict == "probe":
            log.info("tenant %s: probing Graph", self.tenant)
            return Admission(probe=token)
        raise GraphUnavailable(f"{state.message}; nothing was sent", next_probe_at=state.next_probe_at)

    def record(self, admission: Admission, *, answered: bool, request: str = "", error: str = "") -> None:
        """Count a failure (which may open the breaker) or a success (which resets the count, or closes it)."""
        op = "ok" if answered else "fail"
        verdict, state = self._run(op, request=request, token=admission.probe, error=error[:_MAX_ERROR_CHARS])
        if verdict == "opened":
            log.warning("tenant %s: circuit breaker OPEN after %d failed calls in a row (%s); next probe at %s",
                        self.tenant, self.failures_to_open, error, _clock_time(state.next_probe_at))
        elif verdict == "reopened":
            log.info("tenant %s: probe failed (%s); next probe at %s", self.tenant, error,
                     _clock_time(state.next_probe_at))
        elif verdict == "closed_now":
            log.warning("tenant %s: Graph answers again; circuit breaker CLOSED", self.tenant)

    def state(self) -> BreakerState:
        """The current state (read-only)."""
        return self._run("peek")[1]


def _clock_time(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S.%fZ")[:-4] + "Z"
