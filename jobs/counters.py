"""Counter names, each list written once: the job record's counters, and the job's plan counters.

The job record (`bl:job:{id}`) counts users per terminal status (one counter per `UserStatus`,
named like it, moved by jobs/lua/record.lua) and two job counters (throttled answers, retries).
The plan counters (`bl:job:{id}:plan`) count what the users' plans found: `planned`, `changes`,
`unchanged`, `fail:<reason>`, `warn:<warning>`, `note:<note>` (jobs.models.PlanNote), `need:<skuId>`,
`release:<skuId>`; a job with dated rows also `day_need:<instant>:<skuId>` and `day_release:<instant>:<skuId>`
(the instant as its rows' `due_at`, `now` for rows due at submission), its seat table by date.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from jobs.models import UserStatus
from jobs.plan import PlanOutcome, UserPlan
from jobs.schedule import Day

# One counter per user status, named like it: together they say how many users have ended.
USER_COUNTERS: tuple[str, ...] = tuple(s.value for s in UserStatus)
# Counters of the job's calls rather than of its users.
CALL_COUNTERS: tuple[str, ...] = ("throttled", "retries")
# Every counter of the job record; none ever goes down while the job lives.
JOB_COUNTERS: tuple[str, ...] = USER_COUNTERS + CALL_COUNTERS

_FAIL, _WARN, _NOTE, _NEED, _RELEASE = "fail:", "warn:", "note:", "need:", "release:"
_DAY_NEED, _DAY_RELEASE, _NOW = "day_need:", "day_release:", "now"
# The one warning a plan gives (jobs.plan.conflict_warnings), as counted.
MAY_CONFLICT = "may_conflict"


def plan_keys(plan: UserPlan) -> list[str]:
    """The plan counters one user's plan moves (each user's plan is counted once)."""
    notes = [f"{_NOTE}{plan.note}"] if plan.note is not None else []
    if plan.outcome is PlanOutcome.UNCHANGED:
        return ["unchanged", *notes]
    if plan.outcome is PlanOutcome.FAIL:
        return [f"{_FAIL}{plan.reason}"]
    keys = ["changes", *(f"{_NEED}{sku}" for sku in plan.seats_needed),
            *(f"{_RELEASE}{sku}" for sku in plan.seats_released)]
    if plan.warnings:
        keys.append(f"{_WARN}{MAY_CONFLICT}")
    return keys + notes


def day_keys(plan: UserPlan, due_at: float | None) -> list[str]:
    """The counters by day a dated job's user plan moves: the seats its change takes and frees on its day."""
    if plan.outcome is not PlanOutcome.CHANGE:
        return []
    day = _NOW if due_at is None else repr(due_at)
    return [*(f"{_DAY_NEED}{day}:{sku}" for sku in plan.seats_needed),
            *(f"{_DAY_RELEASE}{day}:{sku}" for sku in plan.seats_released)]


@dataclass(frozen=True)
class PlanCounters:
    """What the job's plan found so far: users planned, changes, unchanged, predicted failures, warnings, seats."""

    planned: int = 0
    changes: int = 0
    unchanged: int = 0
    predicted_failures: Mapping[str, int] = field(default_factory=dict)  # reason -> users
    warnings: Mapping[str, int] = field(default_factory=dict)  # warning -> users
    notes: Mapping[str, int] = field(default_factory=dict)  # note (held_via_group) -> users
    needed: Mapping[str, int] = field(default_factory=dict)  # skuId -> seats the changes take
    released: Mapping[str, int] = field(default_factory=dict)  # skuId -> seats the changes give back
    by_day: Mapping[str, int] = field(default_factory=dict)  # `day_need:...` and `day_release:...` -> seats

    @classmethod
    def from_hash(cls, counters: Mapping[str, int]) -> PlanCounters:
        """From the plan counters hash (names as `plan_keys` writes them)."""
        def prefixed(prefix: str) -> dict[str, int]:
            return {k[len(prefix):]: v for k, v in sorted(counters.items()) if k.startswith(prefix)}

        return cls(planned=counters.get("planned", 0), changes=counters.get("changes", 0),
                   unchanged=counters.get("unchanged", 0), predicted_failures=prefixed(_FAIL),
                   warnings=prefixed(_WARN), notes=prefixed(_NOTE), needed=prefixed(_NEED), released=prefixed(_RELEASE),
                   by_day={k: v for k, v in counters.items() if k.startswith((_DAY_NEED, _DAY_RELEASE))})

    def to_hash(self) -> dict[str, int]:
        """Inverse of `from_hash`."""
        return {"planned": self.planned, "changes": self.changes, "unchanged": self.unchanged,
                **{f"{_FAIL}{k}": v for k, v in self.predicted_failures.items()},
                **{f"{_WARN}{k}": v for k, v in self.warnings.items()},
                **{f"{_NOTE}{k}": v for k, v in self.notes.items()},
                **{f"{_NEED}{k}": v for k, v in self.needed.items()},
                **{f"{_RELEASE}{k}": v for k, v in self.released.items()}, **self.by_day}

    def planned_days(self, days: Sequence[Day]) -> tuple[Day, ...]:
        """The job's days with the seats its plan takes and frees on each (not what its input asks): a removal
        a group keeps, or an add a user already holds, counts on no day."""
        adds: dict[str, Counter[str]] = {}
        releases: dict[str, Counter[str]] = {}
        for key, n in self.by_day.items():
            kind, day, sku = key.split(":", 2)
            (adds if f"{kind}:" == _DAY_NEED else releases).setdefault(day, Counter())[sku] += n
        planned = []
        for d in days:
            day = _NOW if d.due_at is None else repr(d.due_at)
            planned.append(replace(d, adds=dict(adds.get(day, {})), releases=dict(releases.get(day, {}))))
        return tuple(planned)

    def seat_demand(self) -> dict[str, int]:
        """Seats per SKU the changes need beyond those they give back (a run of this plan reserves them)."""
        return {sku: max(0, n - self.released.get(sku, 0)) for sku, n in self.needed.items()}

    def to_json(self) -> dict[str, Any]:
        """The job JSON's `plan`, with raw seat counts (`needed`, `released`); jobs.seats turns them into `seats`."""
        return {"changes": self.changes, "unchanged": self.unchanged, "planned": self.planned,
                "predicted_failures": dict(self.predicted_failures), "warnings": dict(self.warnings),
                "notes": dict(self.notes), "needed": dict(self.needed), "released": dict(self.released)}
