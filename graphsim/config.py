"""Configuration of one simulator run: every knob the CLI and `/_sim/config` expose."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

# Graph's documented identity write limits (throttling-limits): per app+tenant and per tenant.
DEFAULT_APP_WRITE_CAPACITY = 3000
DEFAULT_APP_WRITE_PERIOD_S = 150.0
DEFAULT_TENANT_WRITE_CAPACITY = 18000
DEFAULT_TENANT_WRITE_PERIOD_S = 300.0
# Graph's resource-unit quota per app+tenant, by tenant size (throttling-limits, identity and access):
# S under 50 users, M 50-500, L above 500; all per 10 seconds.
READ_LIMIT_PERIOD_S = 10.0
READ_CAPACITY_S, READ_CAPACITY_M, READ_CAPACITY_L = 3500, 5000, 8000
SMALL_TENANT_BELOW, LARGE_TENANT_ABOVE = 50, 500
AUTO: Literal["auto"] = "auto"

FAULT_KNOBS = (
    "fault_503",
    "fault_504",
    "fault_reset",
    "fault_reset_after_apply",
    "fault_slow",
    "fault_malformed",
)


@dataclass(frozen=True)
class WriteLimit:
    """A token bucket of `capacity` units (writes, or resource units for reads) refilled evenly over `period_s`."""

    capacity: int
    period_s: float

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.period_s <= 0:
            raise ValueError("a limit needs capacity >= 1 and period > 0")

    @property
    def rate_per_s(self) -> float:
        """Tokens added per second."""
        return self.capacity / self.period_s

    def __str__(self) -> str:
        return f"{self.capacity}/{self.period_s:g}"


def parse_write_limit(text: str) -> WriteLimit | None:
    """Parse `CAPACITY/SECONDS` (or `none`/`unlimited`) into a limit; None means unlimited."""
    value = text.strip().lower()
    if value in ("none", "unlimited", "off"):
        return None
    capacity, sep, period = value.partition("/")
    if not sep:
        raise ValueError(f"write limit {text!r} must look like CAPACITY/SECONDS or none")
    try:
        return WriteLimit(int(capacity), float(period))
    except ValueError:
        raise ValueError(f"write limit {text!r} must look like CAPACITY/SECONDS or none") from None


def parse_read_limit(text: str) -> WriteLimit | Literal["auto"] | None:
    """Parse a resource-unit limit: `CAPACITY/SECONDS`, `auto` (by tenant size) or `none`."""
    if text.strip().lower() == AUTO:
        return AUTO
    return parse_write_limit(text)


def tenant_read_limit(users: int) -> WriteLimit:
    """Graph's app+tenant resource-unit quota for a tenant of `users` users."""
    if users < SMALL_TENANT_BELOW:
        capacity = READ_CAPACITY_S
    elif users <= LARGE_TENANT_ABOVE:
        capacity = READ_CAPACITY_M
    else:
        capacity = READ_CAPACITY_L
    return WriteLimit(capacity, READ_LIMIT_PERIOD_S)


def resolve_read_limit(setting: WriteLimit | Literal["auto"] | None, users: int) -> WriteLimit | None:
    """The resource-unit limit in force: the configured one, or by tenant size for `auto`."""
    if setting is None or isinstance(setting, WriteLimit):
        return setting
    return tenant_read_limit(users)


def _describe_limit(limit: WriteLimit | Literal["auto"] | None) -> str:
    return "none" if limit is None else str(limit)


@dataclass(frozen=True)
class Force429:
    """Answer the next `count` matching writes with 429 and this Retry-After."""

    count: int
    retry_after_s: float = 300.0
    user: str | None = None  # id or UPN; None matches every write


@dataclass(frozen=True)
class SimConfig:
    """All knobs of a simulator: tenant fixture, transport, throttling, latency and faults."""

    host: str = "127.0.0.1"
    port: int = 0
    public_host: str | None = None
    users: int = 1000
    seed: int = 1
    tenant_id: str | None = None
    fixture_path: Path | None = None
    state_dir: Path | None = None
    ca_out: Path | None = None
    profile_out: Path | None = None
    profile_name: str = "sim"
    control: bool = False
    # 0 issues tokens that are already expired: every Graph call with one gets 401, however fast it comes.
    token_lifetime_s: float = 3600.0
    write_limit: WriteLimit | None = WriteLimit(DEFAULT_APP_WRITE_CAPACITY, DEFAULT_APP_WRITE_PERIOD_S)
    tenant_write_limit: WriteLimit | None = WriteLimit(
        DEFAULT_TENANT_WRITE_CAPACITY, DEFAULT_TENANT_WRITE_PERIOD_S
    )
    # Resource units per app+tenant (every request costs some); off unless set, `auto` sizes it by tenant.
    read_limit: WriteLimit | Literal["auto"] | None = None
    # Whether a request refused with 429 still spends the tokens of the bucket that refused it.
    charge_refused: bool = True
    # Seconds for which assignLicense still sees a user's previous usageLocation after a PATCH changed it.
    replication_lag_s: float = 0.0
    # Share of the generated users who are members of licensed groups (fixture; 0: no groups).
    group_licensed_share: float = 0.0
    # Seconds from a group license or membership change until its members are processed: queued for the
    # first half, in progress for the second; 0 processes on the next request (still not in the same one).
    group_license_delay_s: float = 1.0
    # Whether the tenant has Entra ID P1/P2 (signInActivity is refused without it).
    premium: bool = True
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    # Fault rates: the probability (0..1) that a Graph request (or a whole $batch) meets the fault.
    fault_503: float = 0.0
    fault_504: float = 0.0
    fault_reset: float = 0.0
    fault_reset_after_apply: float = 0.0
    fault_slow: float = 0.0
    fault_malformed: float = 0.0
    slow_s: float = 5.0
    fault_seed: int | None = None
    force_429: Force429 | None = None
    # Monotonic clock for the throttle buckets; tests inject a fake one.
    clock: Callable[[], float] = time.monotonic
    log_level: str = "warning"

    def __post_init__(self) -> None:
        for name in FAULT_KNOBS:
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1")
        if sum(getattr(self, name) for name in FAULT_KNOBS) > 1.0 + 1e-9:
            raise ValueError("the fault rates must add up to at most 1")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0 or self.slow_s < 0 or self.replication_lag_s < 0:
            raise ValueError("latency_ms, latency_jitter_ms, slow_s and replication_lag_s must be >= 0")
        if self.group_license_delay_s < 0:
            raise ValueError("group_license_delay_s must be >= 0")
        if not 0.0 <= self.group_licensed_share <= 1.0:
            raise ValueError("group_licensed_share must be between 0 and 1")
        if self.token_lifetime_s < 0:
            raise ValueError("token_lifetime_s must be >= 0")
        if self.users < 0:
            raise ValueError("users must be >= 0")

    def describe(self) -> dict[str, Any]:
        """The run-time knobs as JSON-ready values (the shape `/_sim/config` accepts)."""
        return {
            "write_limit": _describe_limit(self.write_limit),
            "tenant_write_limit": _describe_limit(self.tenant_write_limit),
            "read_limit": _describe_limit(self.read_limit),
            "charge_refused": self.charge_refused,
            "replication_lag_s": self.replication_lag_s,
            "group_license_delay_s": self.group_license_delay_s,
            "premium": self.premium,
            "latency_ms": self.latency_ms,
            "latency_jitter_ms": self.latency_jitter_ms,
            "token_lifetime_s": self.token_lifetime_s,
            **{name: getattr(self, name) for name in FAULT_KNOBS},
            "slow_s": self.slow_s,
            "force_429": None
            if self.force_429 is None
            else {
                "count": self.force_429.count,
                "retry_after_s": self.force_429.retry_after_s,
                "user": self.force_429.user,
            },
        }


# Knobs that may change while the simulator runs (POST /_sim/config).
RUNTIME_KNOBS = frozenset(
    {"write_limit", "tenant_write_limit", "read_limit", "charge_refused", "replication_lag_s", "latency_ms",
     "latency_jitter_ms", "token_lifetime_s", "slow_s", "group_license_delay_s", "premium"}
    | set(FAULT_KNOBS)
    | {"force_429", "fault_seed"}
)


def _limit_value(value: Any) -> WriteLimit | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_write_limit(value)
    if isinstance(value, Mapping):
        return WriteLimit(int(value["capacity"]), float(value["period_s"]))
    raise ValueError("a limit is 'CAPACITY/SECONDS', 'none' or {capacity, period_s}")


def apply_updates(config: SimConfig, updates: Mapping[str, Any]) -> SimConfig:
    """Return `config` with the JSON `updates` applied; ValueError names a bad knob."""
    known = {f.name for f in fields(SimConfig)}
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        if key not in RUNTIME_KNOBS or key not in known:
            raise ValueError(f"unknown or read-only knob {key!r}")
        try:
            if key in ("write_limit", "tenant_write_limit"):
                changes[key] = _limit_value(value)
            elif key == "read_limit":
                changes[key] = AUTO if isinstance(value, str) and value.strip().lower() == AUTO else _limit_value(value)
            elif key in ("charge_refused", "premium"):
                if not isinstance(value, bool):
                    raise ValueError("must be true or false")
                changes[key] = value
            elif key == "force_429":
                changes[key] = (
                    None
                    if value is None
                    else Force429(
                        count=int(value["count"]),
                        retry_after_s=float(value.get("retry_after_s", 300.0)),
                        user=value.get("user"),
                    )
                )
            elif key == "fault_seed":
                changes[key] = None if value is None else int(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError("must be a number")
                changes[key] = float(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad value for {key!r}: {exc}") from None
    return replace(config, **changes)

