"""The job domain's values: operations in, per-user results out, and the closed sets (statuses, reasons)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class License:
    """A license by skuId, with the servicePlanIds disabled in it: one a row adds, or one a user holds."""

    sku_id: str
    disabled_plans: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Graph's shape, `{"skuId", "disabledPlans"}`."""
        return {"skuId": self.sku_id, "disabledPlans": list(self.disabled_plans)}


@dataclass(frozen=True)
class ExpectedState:
    """The state a user must still be in for an operation to be safe (a rollback's guard against drift).

    `user_id` is the account the name stood for.
    """

    licenses: tuple[License, ...] = ()
    usage_location: str | None = None
    user_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A compact JSON-able form for storage in Redis."""
        data: dict[str, Any] = {"l": [[lic.sku_id, list(lic.disabled_plans)] for lic in self.licenses]}
        if self.usage_location:
            data["u"] = self.usage_location
        if self.user_id:
            data["i"] = self.user_id
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExpectedState:
        """Inverse of `to_json`."""
        return cls(licenses=tuple(License(str(s), tuple(p)) for s, p in data.get("l", ())),
                   usage_location=data.get("u"), user_id=data.get("i"))


class LicenseMode(StrEnum):
    """What an operation's licenses mean: licenses to add (and remove), or every license the user should hold.

    In `exact` mode (alias `sync`) the plan removes what the user holds directly beyond the list,
    computed from the user's state when it is read (jobs.plan.exact_removals).
    """

    ADD = "add"
    EXACT = "exact"

    @classmethod
    def parse(cls, text: str) -> LicenseMode:
        """A mode as written by a caller: `add`, `exact` or its alias `sync` (any case); ValueError otherwise."""
        value = text.strip().lower()
        return cls.EXACT if value == "sync" else cls(value)


class Assignment(StrEnum):
    """How an added license must be held: in any way (a group's counts), or by a direct assignment.

    Under `any` an add that a group already gives the user (same disabled plans) is unchanged, noted
    `held_via_group`; under `direct` it is assigned directly too (it takes no further seat, and the
    user keeps it when leaving the group).
    """

    ANY = "any"
    DIRECT = "direct"


@dataclass(frozen=True)
class Operation:
    """What to do to one user: one assignLicense call, and a usageLocation PATCH (before it) if asked.

    `row` is where the operation came from: the CSV line number (header = 1) or the 1-based index
    in a JSON `operations` list (a rollback keeps the row of the job it undoes). `extra` holds the
    input's other columns, echoed in the results. `source` holds the operation as the user wrote it
    (names, not ids), for resubmittable results. A rollback's operation also carries `expect` (the
    state the job left, which the user must still be in), `location_last` (the PATCH goes after the
    assignLicense: the licenses that needed the location are gone first) and `note` (what it cannot
    undo, told in the user's result). In `exact` mode, `add` lists every license the user should
    hold and `remove` is empty: the plan works out the removals.
    """

    row: int
    user: str
    add: tuple[License, ...] = ()
    remove: tuple[str, ...] = ()
    usage_location: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    source: tuple[tuple[str, str], ...] = ()
    expect: ExpectedState | None = None
    location_last: bool = False
    note: str | None = None
    mode: LicenseMode = LicenseMode.ADD
    assignment: Assignment = Assignment.ANY
    effective: str | None = None
    last_day: bool = False
    due_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A compact JSON-able form for storage in Redis."""
        data: dict[str, Any] = {"r": self.row, "u": self.user}
        if self.add:
            data["a"] = [[a.sku_id, list(a.disabled_plans)] for a in self.add]
        if self.remove:
            data["x"] = list(self.remove)
        if self.usage_location:
            data["l"] = self.usage_location
        if self.extra:
            data["e"] = [list(kv) for kv in self.extra]
        if self.source:
            data["s"] = [list(kv) for kv in self.source]
        if self.expect is not None:
            data["ex"] = self.expect.to_json()
        if self.location_last:
            data["ll"] = 1
        if self.note:
            data["n"] = self.note
        if self.mode is not LicenseMode.ADD:
            data["m"] = self.mode.value
        if self.assignment is not Assignment.ANY:
            data["as"] = self.assignment.value
        if self.effective:
            data["d"] = self.effective
        if self.last_day:
            data["ld"] = 1
        if self.due_at is not None:
            data["due"] = self.due_at
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        """Inverse of `to_json`."""
        return cls(
            row=int(data["r"]),
            user=str(data["u"]),
            add=tuple(License(str(s), tuple(p)) for s, p in data.get("a", ())),
            remove=tuple(data.get("x", ())),
            usage_location=data.get("l"),
            extra=tuple((str(k), str(v)) for k, v in data.get("e", ())),
            source=tuple((str(k), str(v)) for k, v in data.get("s", ())),
            expect=ExpectedState.from_json(data["ex"]) if "ex" in data else None,
            location_last=bool(data.get("ll")),
            note=data.get("n"),
            mode=LicenseMode(data.get("m", LicenseMode.ADD)),
            assignment=Assignment(data.get("as", Assignment.ANY)),
            effective=data.get("d"),
            last_day=bool(data.get("ld")),
            due_at=float(data["due"]) if "due" in data else None,
        )

    def dumps(self) -> str:
        """Serialize for Redis."""
        return json.dumps(self.to_json(), separators=(",", ":"))


# Input columns kept with each operation and echoed in the results (a failed-rows export resubmits as is).
SOURCE_COLUMNS = ("add", "remove", "disabled_plans", "usage_location")
# First characters a spreadsheet runs as a formula (CSV injection).
FORMULA_START = frozenset("=@\t\r+-")


class UserStatus(StrEnum):
    """Terminal states of one user in a job (the `would_*` ones and `unchanged` also end a dry run)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNCHANGED = "unchanged"
    WOULD_CHANGE = "would_change"
    WOULD_FAIL = "would_fail"


class JobStatus(StrEnum):
    """States of a job as reported by the progress endpoint."""

    QUEUED = "queued"
    PLANNING = "planning"
    RUNNING = "running"
    PAUSED = "paused"
    PLANNED = "planned"
    SCHEDULED = "scheduled"  # every pending user waits for its effective date
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether the job has ended (no user is pending any more)."""
        return self in TERMINAL_JOB_STATUSES


TERMINAL_JOB_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_ERRORS, JobStatus.CANCELLED, JobStatus.PLANNED}
)


class PauseReason(StrEnum):
    """Why a job stopped sending writes and waits, instead of failing its users one by one."""

    NO_FREE_SEAT = "no_free_seat"
    AUTH_FAILED = "auth_failed"
    FORBIDDEN = "forbidden"
    GRAPH_UNAVAILABLE = "graph_unavailable"


class SeatPolicy(StrEnum):
    """What a real job does when the tenant lacks seats for it."""

    FAIL = "fail"
    WAIT = "wait"


@dataclass(frozen=True)
class JobOptions:
    """How a submitted job runs: a dry run (plan only), what to do when seats are short, whom to tell when it ends."""

    dry_run: bool = False
    seat_policy: SeatPolicy = SeatPolicy.FAIL
    callback_url: str | None = None
    # None: not chosen (a file that lists what users hold is then refused as ambiguous).
    mode: LicenseMode | None = None
    # Columns the caller says to keep as they are although their values name licenses.
    keep_columns: tuple[str, ...] = ()
    # None: not chosen (`any`, or what a JSON body says).
    assignment: Assignment | None = None


class Reason(StrEnum):
    """Why a user did not succeed: the normalized `reason` of a failed or cancelled result."""

    # What Graph refused (jobs.reasons maps its answers onto these).
    USER_NOT_FOUND = "user_not_found"
    NO_FREE_SEAT = "no_free_seat"
    USAGE_LOCATION_MISSING = "usage_location_missing"
    INVALID_USAGE_LOCATION = "invalid_usage_location"
    LICENSE_NOT_ASSIGNED = "license_not_assigned"
    CONFLICTING_LICENSES = "conflicting_licenses"
    UNKNOWN_SKU = "unknown_sku"
    SKU_NOT_ASSIGNABLE = "sku_not_assignable"
    INVALID_DISABLED_PLAN = "invalid_disabled_plan"
    FORBIDDEN = "forbidden"
    AUTH_FAILED = "auth_failed"
    BAD_REQUEST = "bad_request"
    GRAPH_ERROR = "graph_error"
    # What the service decided.
    RETRIES_EXHAUSTED = "retries_exhausted"
    CANCELLED = "cancelled"
    TENANT_NOT_CONFIGURED = "tenant_not_configured"
    CHUNK_FAILED_REPEATEDLY = "chunk_failed_repeatedly"
    DRIFTED = "drifted"  # a rollback found the user changed since the job it undoes: left alone
    INHERITED_FROM_GROUP = "inherited_from_group"  # a removal of a license the user holds only through groups


class PlanNote(StrEnum):
    """What a plan tells about a user besides its outcome."""

    HELD_VIA_GROUP = "held_via_group"  # an add a group already gives: not assigned directly


@dataclass(frozen=True)
class GroupLink:
    """A license of the operation the user holds through a group: the SKU, the group, its name once known."""

    sku_id: str
    group_id: str
    group_name: str | None = None

    def to_json(self) -> dict[str, str]:
        """The stored and API shape."""
        data = {"sku_id": self.sku_id, "group_id": self.group_id}
        if self.group_name is not None:
            data["group_name"] = self.group_name
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GroupLink:
        """Inverse of `to_json`."""
        return cls(str(data["sku_id"]), str(data["group_id"]), data.get("group_name"))


@dataclass(frozen=True)
class UserResult:
    """The terminal outcome for one user."""

    row: int
    user: str
    status: UserStatus
    reason: Reason | None = None
    graph_code: str | None = None
    graph_message: str | None = None
    http_status: int | None = None
    attempts: int = 0
    updated_at: float = 0.0
    detail: str | None = None
    # The user's state before the job touched it and (for changed users) after: Graph-shaped
    # `{"assignedLicenses": [...], "usageLocation"}` (see jobs.plan.UserState).
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    action: str | None = None
    warnings: tuple[str, ...] = ()
    # `held_via_group` (PlanNote) and the groups through which the user holds the operation's licenses.
    note: PlanNote | None = None
    groups: tuple[GroupLink, ...] = ()
    # A row held for its effective date: when it was due, and how late it ran (workers were down then).
    scheduled_for: float | None = None
    late_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A compact JSON-able form for storage in Redis."""
        data = {k: v for k, v in self.__dict__.items() if v is not None}
        for name in ("warnings", "groups"):
            data.pop(name, None)
        if self.warnings:
            data["warnings"] = list(self.warnings)
        if self.groups:
            data["groups"] = [g.to_json() for g in self.groups]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserResult:
        """Inverse of `to_json`."""
        return cls(**{**data, "status": UserStatus(data["status"]),
                      "reason": Reason(data["reason"]) if data.get("reason") else None,
                      "warnings": tuple(data.get("warnings", ())),
                      "note": PlanNote(data["note"]) if data.get("note") else None,
                      "groups": tuple(GroupLink.from_json(g) for g in data.get("groups", ()))})


@dataclass(frozen=True)
class FieldError:
    """One reason an input was refused: what is wrong and where (row, column, value)."""

    message: str
    row: int | None = None
    column: str | None = None
    value: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The API's error item shape."""
        return {"row": self.row, "column": self.column, "value": self.value, "message": self.message}


@dataclass
class InputRejected(Exception):
    """The input was refused whole; nothing was enqueued."""

    errors: list[FieldError] = field(default_factory=list)
    total_errors: int = 0
    status_code: int = 422

    def __post_init__(self) -> None:
        super().__init__(self.summary())
        if not self.total_errors:
            self.total_errors = len(self.errors)

    def summary(self) -> str:
        """A one-line description."""
        if not self.errors:
            return "input rejected"
        first = self.errors[0]
        more = f" (and {self.total_errors - 1} more)" if self.total_errors > 1 else ""
        return f"{first.message}{more}"


def iso_time(ts: float) -> str:
    """An epoch time as the API writes it: UTC, to the millisecond, `Z`-suffixed (`2025-01-01T00:00:00.000Z`)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
