"""Graph's identity throttling: resource units per app+tenant, writes per app+tenant and per tenant."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from graphsim.config import WriteLimit

# Graph sends x-ms-throttle-limit-percentage only above this share of a limit (throttling-limits).
REPORT_ABOVE_FRACTION = 0.8
WRITE_LIMIT_EXCEEDED = "WriteLimitExceeded"
RESOURCE_UNIT_LIMIT_EXCEEDED = "ResourceUnitLimitExceeded"

# Base resource-unit costs of the routes graphsim serves that the identity cost table lists
# (throttling-limits); any other identity request, read or write, costs 1.
_LISTED_READ_COSTS: dict[tuple[str, ...], int] = {("users",): 2, ("subscribedSkus",): 3}
_LICENSE_DETAILS_COST = 2  # me/licenseDetails, which the table extends to users/{id}/licenseDetails
_GROUP_MEMBERS_COST = 3  # groups/{id}/members
_SMALL_TOP = 20  # $top below this takes one unit off


def resource_units(method: str, segments: Sequence[str], query: Mapping[str, list[str]]) -> int:
    """What one identity request costs: the base cost, $select -1, $expand +1, $top < 20 -1, never below 1."""
    cost = 1
    if method == "GET":
        if len(segments) == 3 and segments[0] == "users" and segments[2] == "licenseDetails":
            cost = _LICENSE_DETAILS_COST
        elif len(segments) == 3 and segments[0] == "groups" and segments[2] == "members":
            cost = _GROUP_MEMBERS_COST
        else:
            cost = _LISTED_READ_COSTS.get(tuple(segments), 1)
    if query.get("$select"):
        cost -= 1
    if query.get("$expand"):
        cost += 1
    top = query.get("$top")
    if top and top[0].strip().isdigit() and int(top[0]) < _SMALL_TOP:
        cost -= 1
    return max(1, cost)


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

    def wait_s(self, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens are available (0 when they are now)."""
        tokens = self._refill()
        need = min(cost, float(self.limit.capacity))
        # Tolerance for float error, so waiting exactly the advertised time always succeeds.
        if tokens >= need - 1e-9:
            return 0.0
        return (need - tokens) / self.limit.rate_per_s

    def take(self, cost: float = 1.0) -> None:
        """Consume `cost` tokens (the caller checked `wait_s(cost) == 0`)."""
        self._tokens -= cost

    def forfeit(self, cost: float = 1.0) -> None:
        """Charge a refused request: it spends what it would have cost, down to an empty bucket."""
        # Never below empty, so Retry-After (computed after this) stays the honest wait for one token.
        self._tokens = max(0.0, self._refill() - cost)

    def used_fraction(self) -> float:
        """Share of the capacity currently used (1.0 = empty bucket)."""
        return 1.0 - self._refill() / self.limit.capacity


@dataclass(frozen=True)
class ThrottleResult:
    """The outcome of charging one request: throttled or not, and the headers Graph would send."""

    retry_after_s: float | None
    scope: str | None
    used_fraction: float
    information: str | None = None

    @property
    def throttled(self) -> bool:
        """Whether the request is refused with 429."""
        return self.retry_after_s is not None


@dataclass(frozen=True)
class _Charge:
    """One bucket a request draws on: its scope label, the bucket, the cost and the refusal reason."""

    scope: str
    bucket: TokenBucket
    cost: float
    information: str


def format_retry_after(seconds: float) -> str:
    """Retry-After as Graph may send it: seconds, fractional, rounded up to the millisecond."""
    value = max(0.001, math.ceil(seconds * 1000.0) / 1000.0)
    return f"{value:.3f}".rstrip("0").rstrip(".")


class Throttler:
    """Charges requests against the resource-unit and write buckets; a None limit is unlimited."""

    def __init__(self, tenant_id: str, app_limit: WriteLimit | None, tenant_limit: WriteLimit | None,
                 clock: Callable[[], float], read_limit: WriteLimit | None = None, *,
                 charge_refused: bool = True) -> None:
        self._tenant_id = tenant_id
        self._clock = clock
        self._app_limit = app_limit
        self._read_limit = read_limit
        self._app_buckets: dict[str, TokenBucket] = {}
        self._read_buckets: dict[str, TokenBucket] = {}
        self._tenant_bucket = TokenBucket(tenant_limit, clock) if tenant_limit else None
        # Whether a refused request still spends tokens of the bucket that refused it.
        self.charge_refused = charge_refused

    def _bucket(self, buckets: dict[str, TokenBucket], limit: WriteLimit, app_id: str) -> TokenBucket:
        bucket = buckets.get(app_id)
        if bucket is None:
            bucket = buckets[app_id] = TokenBucket(limit, self._clock)
        return bucket

    def _charges(self, app_id: str, units: int, writes: int) -> list[_Charge]:
        charges: list[_Charge] = []
        if self._read_limit is not None and units > 0:
            # The resource-unit quota counts every request; a write it refuses is labelled ReadWrite.
            label = "ReadWrite" if writes else "Read"
            charges.append(_Charge(f"Tenant_Application/{label}",
                                   self._bucket(self._read_buckets, self._read_limit, app_id), units,
                                   RESOURCE_UNIT_LIMIT_EXCEEDED))
        if writes > 0 and self._app_limit is not None:
            charges.append(_Charge("Tenant_Application/Write", self._bucket(self._app_buckets, self._app_limit,
                                                                            app_id), writes, WRITE_LIMIT_EXCEEDED))
        if writes > 0 and self._tenant_bucket is not None:
            charges.append(_Charge("Tenant/Write", self._tenant_bucket, writes, WRITE_LIMIT_EXCEEDED))
        return charges

    def charge(self, app_id: str, resource_units: int = 1, writes: int = 1) -> ThrottleResult:
        """Charge one request (by default one write): from every bucket, or, if any is short, 429."""
        charges = self._charges(app_id, resource_units, writes)
        refused = [c for c in charges if c.bucket.wait_s(c.cost) > 0]
        if refused:
            worst_wait, worst = 0.0, refused[0]
            for c in refused:
                if self.charge_refused:
                    c.bucket.forfeit(c.cost)
                wait = c.bucket.wait_s(c.cost)
                if wait > worst_wait:
                    worst_wait, worst = wait, c
            return ThrottleResult(worst_wait, f"{worst.scope}/{app_id}/{self._tenant_id}", 1.0, worst.information)
        for c in charges:
            c.bucket.take(c.cost)
        used = max((c.bucket.used_fraction() for c in charges), default=0.0)
        return ThrottleResult(None, None, used)


# The name the write-only callers know it by.
WriteThrottler = Throttler
