"""Counter names, each list written once: the job record's counters, and the job's plan counters.

The job record (`bl:job:{id}`) counts users per terminal status (one counter per `UserStatus`,
named like it, moved by jobs/lua/record.lua) and two job counters (throttled answers, retries).
The plan counters (`bl:job:{id}:plan`) count what the users' plans found: `planned`, `changes`,
`unchanged`, `fail:<reason>`, `warn:<warning>`, `note:<note>` (jobs.models.PlanNote), `need:<skuId>`,
`release:<skuId>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.models import UserStatus
from jobs.plan import PlanOutcome, UserPlan

# One counter per user status, named like it: together they say how many users have ended.
USER_COUNTERS: tuple[str, ...] = tuple(s.value for s in UserStatus)
# Counters of the job's calls rather than of its users.
CALL_COUNTERS: tuple[str, ...] = ("throttled", "retries")
# Every counter of the job record; none ever goes down while the job lives.
JOB_COUNTERS: tuple[str, ...] = USER_COUNTERS + CALL_COUNTERS

_FAIL, _WARN, _NOTE, _NEED, _RELEASE = "fail:", "warn:", "note:", "need:", "release:"
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

    @classmethod
    def from_hash(cls, counters: Mapping[str, int]) -> PlanCounters:
        """From the plan counters hash (names as `plan_keys` writes them)."""
        def prefixed(prefix: str) -> dict[str, int]:
            return {k[len(prefix):]: v for k, v in sorted(counters.items()) if k.startswith(prefix)}

        return cls(planned=counters.get("planned", 0), changes=counters.get("changes", 0),
                   unchanged=counters.get("unchanged", 0), predicted_failures=prefixed(_FAIL),
                   warnings=prefixed(_WARN), notes=prefixed(_NOTE), needed=prefixed(_NEED), released=prefixed(_RELEASE))

    def to_hash(self) -> dict[str, int]:
        """Inverse of `from_hash`."""
        return {"planned": self.planned, "changes": self.changes, "unchanged": self.unchanged,
                **{f"{_FAIL}{k}": v for k, v in self.predicted_failures.items()},
                **{f"{_WARN}{k}": v for k, v in self.warnings.items()},
                **{f"{_NOTE}{k}": v for k, v in self.notes.items()},
                **{f"{_NEED}{k}": v for k, v in self.needed.items()},
                **{f"{_RELEASE}{k}": v for k, v in self.released.items()}}

    def seat_demand(self) -> dict[str, int]:
        """Seats per SKU the changes need beyond those they give back (a run of this plan reserves them)."""
        return {sku: max(0, n - self.released.get(sku, 0)) for sku, n in self.needed.items()}

    def to_json(self) -> dict[str, Any]:
        """The job JSON's `plan`, with raw seat counts (`needed`, `released`); jobs.seats turns them into `seats`."""
        return {"changes": self.changes, "unchanged": self.unchanged, "planned": self.planned,
                "predicted_failures": dict(self.predicted_failures), "warnings": dict(self.warnings),
                "notes": dict(self.notes), "needed": dict(self.needed), "released": dict(self.released)}
