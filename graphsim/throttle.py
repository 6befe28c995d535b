"""Graph's write throttling: token buckets per app+tenant and per tenant."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from graphsim.config import WriteLimit

# Graph sends x-ms-throttle-limit-percentage only above this share of a limit (throttling-limits).
REPORT_ABOVE_FRACTION = 0.8


class TokenBucket:
    """A bucket of `capacity` tokens refilled continuously at capacity/period; starts full."""

    def __init__(self, limit: WriteLimit, clock: Callable[[], float]) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.capacity)
        self._updated = clock()

    def _refill(self) -> float:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(float(self.limit.capacity), self._tokens + elapsed * self.limit.rate_per_s)
            self._updated = now
        return self._tokens

    def wait_s(self) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        tokens = self._refill()
        # Tolerance for float error, so waiting exactly the advertised time always succeeds.
        if tokens >= 1.0 - 1e-9:
            return 0.0
        return (1.0 - tokens) / self.limit.rate_per_s

    def take(self) -> None:
        """Consume one token (the caller checked `wait_s() == 0`)."""
        self._tokens -= 1.0

    def used_fraction(self) -> float:
        """Share of the capacity currently used (1.0 = empty bucket)."""
        return 1.0 - self._refill() / self.limit.capacity


@dataclass(frozen=True)
class ThrottleResult:
    """The outcome of charging one write: throttled or not, and the headers Graph would send."""

    retry_after_s: float | None
    scope: str | None
    used_fraction: float

    @property
    def throttled(self) -> bool:
        """Whether the write is refused with 429."""
        return self.retry_after_s is not None


def format_retry_after(seconds: float) -> str:
    """Retry-After as Graph may send it: seconds, fractional, rounded up to the millisecond."""
    value = max(0.001, math.ceil(seconds * 1000.0) / 1000.0)
    return f"{value:.3f}".rstrip("0").rstrip(".")


class WriteThrottler:
    """Charges writes against the per-app+tenant and per-tenant buckets; None limits are unlimited."""

    def __init__(self, tenant_id: str, app_limit: WriteLimit | None, tenant_limit: WriteLimit | None,
                 clock: Callable[[], float]) -> None:
        self._tenant_id = tenant_id
        self._clock = clock
        self._app_limit = app_limit
        self._app_buckets: dict[str, TokenBucket] = {}
        self._tenant_bucket = TokenBucket(tenant_limit, clock) if tenant_limit else None

    def charge(self, app_id: str) -> ThrottleResult:
        """Take one write token from each bucket, or none if any is empty (then 429)."""
        buckets: list[tuple[str, TokenBucket]] = []
        if self._app_limit is not None:
            bucket = self._app_buckets.get(app_id)
            if bucket is None:
                bucket = self._app_buckets[app_id] = TokenBucket(self._app_limit, self._clock)
            buckets.append(("Tenant_Application", bucket))
        if self._tenant_bucket is not None:
            buckets.append(("Tenant", self._tenant_bucket))
        worst_wait, worst_scope = 0.0, None
        for name, bucket in buckets:
            wait = bucket.wait_s()
            if wait > worst_wait:
                worst_wait, worst_scope = wait, name
        if worst_scope is not None:
            return ThrottleResult(worst_wait, f"{worst_scope}/Write/{app_id}/{self._tenant_id}", 1.0)
        for _, bucket in buckets:
            bucket.take()
        used = max((bucket.used_fraction() for _, bucket in buckets), default=0.0)
        return ThrottleResult(None, None, used)
