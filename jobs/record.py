"""The job record: the `bl:job:{id}` hash as one typed value (what the job was asked, its counters, pause, links).

Redis keeps the hash as strings (`"1"`/`"0"` booleans, epoch seconds, JSON warnings) because its
Lua scripts move single fields atomically; `JobRecord.from_hash` reads all of it once, and code
works with the typed value. A new field: add it to `JobSpec` (fixed at commit) or `JobRecord`
(written as the job goes), in both `from_hash` and `to_hash`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from jobs.counters import CALL_COUNTERS
from jobs.models import Assignment, LicenseMode, PauseReason, SeatPolicy, UserStatus
from jobs.schedule import Day, dump_days, load_days


class JobState(StrEnum):
    """Where a job is in its submission: staged chunk by chunk, then committed."""

    STAGING = "staging"  # expires on its own unless committed
    QUEUED = "queued"  # committed; its chunks are dispatched


class SeatBasis(StrEnum):
    """What the job's seat reservation was counted from."""

    INPUT = "input"  # a seat per added license of every row: a user found not to need one gives it back
    PLAN = "plan"  # exactly what a dry run counted (the run of a dry run, a rollback)


class JobKind(StrEnum):
    """What the job is for."""

    JOB = "job"  # operations from an upload
    ROLLBACK = "rollback"  # the way back of another job (`rollback_of`)
    # Operations from a scan of the tenant itself (jobs.scan_jobs): its chunk 0 scans, the others run.
    RECLAIM = "reclaim"  # remove the direct licenses of disabled and inactive users
    REDUNDANT_DIRECT = "redundant_direct"  # remove direct assignments a group already covers


# Kinds of job whose operations a scan of the tenant makes.
SCAN_KINDS = frozenset({JobKind.RECLAIM, JobKind.REDUNDANT_DIRECT})


class ScanOutcome(StrEnum):
    """How the scan of a job built from the tenant ended."""

    DONE = "done"
    CANCELLED = "cancelled"  # cancelled before it finished: the job has no operations
    FAILED = "failed"  # the tenant could not be read (the job's warnings say why)


class Prefetch(StrEnum):
    """A large dry run reads the tenant page by page first (jobs.prefetch)."""

    ASKED = "1"  # its first chunk pages the tenant before anything else runs
    DONE = "done"  # the first chunk did (whether or not the listing succeeded: see `prefetched`)


class ApprovalDecision(StrEnum):
    """What became of a job that waited for approval."""

    APPROVED = "approved"  # another key approved it: its run is `run_as`
    REJECTED = "rejected"  # another key refused it: it ends cancelled
    WITHDRAWN = "withdrawn"  # cancelled while it waited (by any writing key, its submitter's included)


@dataclass(frozen=True)
class Approval:
    """The decision on a job that waited for approval: what, by which API key (its name), when, and why."""

    decision: ApprovalDecision
    by: str
    at: float
    reason: str | None = None

    def encode(self) -> str:
        """The stored form: one JSON field, so that the decision and who took it are set in one step."""
        return json.dumps({"decision": self.decision.value, "by": self.by, "at": self.at, "reason": self.reason})

    @classmethod
    def parse(cls, raw: str) -> Approval:
        """Inverse of `encode`."""
        data = json.loads(raw)
        return cls(ApprovalDecision(data["decision"]), str(data["by"]), float(data["at"]), data.get("reason"))


# Fields naming related jobs, shown as they are (a dry run and its real run, a rollback).
LINK_FIELDS = ("planned_from", "run_as", "rollback_of", "rolled_back_by")


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _moment(raw: Mapping[str, str], name: str) -> float | None:
    return float(raw[name]) if raw.get(name) else None


def _count(raw: Mapping[str, str], name: str) -> int:
    return int(raw.get(name) or 0)


@dataclass(frozen=True)
class JobSpec:
    """What a job was asked to do, written once when it is committed."""

    source: str = ""  # csv, json, rollback
    owner: str = ""  # the API key that submitted it
    warnings: tuple[str, ...] = ()
    dry_run: bool = False
    seat_policy: SeatPolicy = SeatPolicy.FAIL
    seat_basis: SeatBasis = SeatBasis.INPUT
    kind: JobKind = JobKind.JOB
    prefetch: Prefetch | None = None
    callback_url: str | None = None
    rollback_of: str | None = None  # the job a rollback undoes
    planned_from: str | None = None  # the dry run this job is the run of
    # How the input was read: the license mode (None: an upload's default, `add`), the reading report
    # (jobs.input.reading, `input` in the job JSON) and the columns kept unread although they name licenses.
    mode: LicenseMode | None = None
    reading: Mapping[str, Any] | None = None
    kept_columns: tuple[str, ...] = ()
    # What the scan of a job built from the tenant is to look for (jobs.scan_jobs.ScanRequest's JSON).
    scan: Mapping[str, Any] | None = None
    # How adds must be held: `direct` asks for direct assignments where a group already gives the license.
    assignment: Assignment = Assignment.ANY
    # It plans, then waits at `planned` for another key's approval; its run is another job (jobs.approval).
    needs_approval: bool = False
    # The job's rows by the instant they are due (jobs.schedule); empty when no row has a date.
    schedule: tuple[Day, ...] = ()

    @property
    def plans_only(self) -> bool:
        """Whether the job only reads and plans, never writes (a dry run, or a job waiting for approval)."""
        return self.dry_run or self.needs_approval

    def to_hash(self) -> dict[str, str]:
        """The hash fields (absent ones left out)."""
        fields = {"source": self.source, "owner": self.owner, "warnings": json.dumps(list(self.warnings)),
                  "dry_run": _flag(self.dry_run), "seat_policy": self.seat_policy.value,
                  "seat_basis": self.seat_basis.value, "kind": self.kind.value}
        optional = {"prefetch": self.prefetch.value if self.prefetch else None, "callback_url": self.callback_url,
                    "rollback_of": self.rollback_of, "planned_from": self.planned_from,
                    "mode": self.mode.value if self.mode else None,
                    "input": json.dumps(dict(self.reading)) if self.reading is not None else None,
                    "kept_columns": json.dumps(list(self.kept_columns)) if self.kept_columns else None,
                    "scan": json.dumps(dict(self.scan)) if self.scan is not None else None,
                    "assignment": self.assignment.value if self.assignment is not Assignment.ANY else None,
                    "needs_approval": "1" if self.needs_approval else None,
                    "schedule": dump_days(self.schedule) if self.schedule else None}
        return fields | {k: v for k, v in optional.items() if v is not None}

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> JobSpec:
        """Inverse of `to_hash`."""
        return cls(
            source=raw.get("source", ""), owner=raw.get("owner", ""),
            warnings=tuple(json.loads(raw.get("warnings") or "[]")), dry_run=raw.get("dry_run") == "1",
            seat_policy=SeatPolicy(raw.get("seat_policy") or SeatPolicy.FAIL),
            seat_basis=SeatBasis(raw.get("seat_basis") or SeatBasis.INPUT),
            kind=JobKind(raw.get("kind") or JobKind.JOB),
            prefetch=Prefetch(raw["prefetch"]) if raw.get("prefetch") else None,
            callback_url=raw.get("callback_url"), rollback_of=raw.get("rollback_of"),
            planned_from=raw.get("planned_from"),
            mode=LicenseMode(raw["mode"]) if raw.get("mode") else None,
            reading=json.loads(raw["input"]) if "input" in raw else None,
            kept_columns=tuple(json.loads(raw.get("kept_columns") or "[]")),
            scan=json.loads(raw["scan"]) if raw.get("scan") else None,
            assignment=Assignment(raw.get("assignment") or Assignment.ANY),
            needs_approval=raw.get("needs_approval") == "1",
            schedule=load_days(raw.get("schedule")),
        )


@dataclass(frozen=True)
class Pause:
    """Why a job stopped sending and waits, and when it is next probed (None: a person resumes it)."""

    reason: PauseReason
    message: str | None = None
    at: float | None = None
    next_probe_at: float | None = None


@dataclass(frozen=True)
class JobRecord:
    """One job as the store keeps it: its spec, counters, pause and links (see jobs.store's key map)."""

    id: str
    tenant: str
    state: JobState
    created_at: float
    spec: JobSpec = field(default_factory=JobSpec)
    total: int = 0
    chunks: int = 0
    chunks_done: int = 0
    next_chunk: int = 0  # the dispatch cursor: chunks below it have been sent
    # Users per terminal status (each status has a counter of its name), and the calls' counters.
    counts: Mapping[UserStatus, int] = field(default_factory=dict)
    throttled: int = 0
    retries: int = 0
    cancel_requested_at: float | None = None
    pause: Pause | None = None
    resumed_at: float | None = None
    started_at: float | None = None  # first chunk claimed (or first result)
    first_write_at: float | None = None  # until then the job is planning
    finished_at: float | None = None
    prefetched: bool = False  # the whole tenant was read: a user not kept does not exist
    run_as: str | None = None  # a dry run's real run
    rolled_back_by: str | None = None
    allowed: frozenset[str] = frozenset()  # steps Graph let the job's app do at least once
    approval: Approval | None = None  # the decision on a job that waited for approval
    scan_outcome: ScanOutcome | None = None  # a job built from the tenant: how its scan ended (None: not yet)
    scan_summary: Mapping[str, Any] | None = None  # what the scan counted (users read, candidates, exclusions)
    held_from: int | None = None  # chunks from this one on wait for their day in the due set (jobs.schedule)

    @property
    def done(self) -> int:
        """Users with a terminal result."""
        return sum(self.counts.values())

    @property
    def pending(self) -> int:
        """Users still without one."""
        return max(0, self.total - self.done)

    def count(self, status: UserStatus) -> int:
        """Users that ended in `status`."""
        return self.counts.get(status, 0)

    @property
    def scanning(self) -> bool:
        """Whether the job is built from a scan of the tenant that has not ended yet."""
        return self.spec.scan is not None and self.scan_outcome is None

    @property
    def cancel_requested(self) -> bool:
        """Whether someone asked to cancel the job."""
        return self.cancel_requested_at is not None

    @property
    def links(self) -> tuple[tuple[str, str], ...]:
        """(field, job id) of each related job noted on the record."""
        named = {"planned_from": self.spec.planned_from, "run_as": self.run_as,
                 "rollback_of": self.spec.rollback_of, "rolled_back_by": self.rolled_back_by}
        return tuple((name, job_id) for name in LINK_FIELDS if (job_id := named[name]) is not None)

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> JobRecord:
        """From the hash as Redis returns it, decoded to strings."""
        pause = None
        if raw.get("paused_reason"):
            pause = Pause(PauseReason(raw["paused_reason"]), raw.get("paused_message"),
                          _moment(raw, "paused_at"), _moment(raw, "next_probe_at"))
        return cls(
            id=raw.get("id", ""), tenant=raw.get("tenant", ""), state=JobState(raw.get("state") or JobState.QUEUED),
            created_at=float(raw.get("created_at") or 0), spec=JobSpec.from_hash(raw), total=_count(raw, "total"),
            chunks=_count(raw, "chunks"), chunks_done=_count(raw, "chunks_done"),
            next_chunk=_count(raw, "next_chunk"), counts={s: _count(raw, s.value) for s in UserStatus},
            throttled=_count(raw, "throttled"), retries=_count(raw, "retries"),
            cancel_requested_at=_moment(raw, "cancel_requested"), pause=pause,
            resumed_at=_moment(raw, "resumed_at"), started_at=_moment(raw, "started_at"),
            first_write_at=_moment(raw, "first_write_at"), finished_at=_moment(raw, "finished_at"),
            prefetched=raw.get("prefetched") == "1", run_as=raw.get("run_as"),
            rolled_back_by=raw.get("rolled_back_by"),
            allowed=frozenset(k.removeprefix("allowed:") for k in raw if k.startswith("allowed:")),
            approval=Approval.parse(raw["approval"]) if raw.get("approval") else None,
            scan_outcome=ScanOutcome(raw["scan_outcome"]) if raw.get("scan_outcome") else None,
            scan_summary=json.loads(raw["scan_summary"]) if raw.get("scan_summary") else None,
            held_from=int(raw["held_from"]) if raw.get("held_from") else None,
        )

    def to_hash(self) -> dict[str, str]:
        """Inverse of `from_hash` (fields not set left out)."""
        counters = {s.value: self.count(s) for s in UserStatus} | dict(
            zip(CALL_COUNTERS, (self.throttled, self.retries), strict=True))
        moments = {"cancel_requested": self.cancel_requested_at, "resumed_at": self.resumed_at,
                   "started_at": self.started_at, "first_write_at": self.first_write_at,
                   "finished_at": self.finished_at}
        if self.pause is not None:
            moments |= {"paused_at": self.pause.at, "next_probe_at": self.pause.next_probe_at}
        fields = {"id": self.id, "tenant": self.tenant, "state": self.state.value, "created_at": repr(self.created_at),
                  **self.spec.to_hash(), "total": str(self.total), "chunks": str(self.chunks),
                  "chunks_done": str(self.chunks_done), "next_chunk": str(self.next_chunk),
                  **{k: str(v) for k, v in counters.items()},
                  **{k: repr(v) for k, v in moments.items() if v is not None},
                  **{f"allowed:{step}": "1" for step in sorted(self.allowed)}}
        if self.pause is not None:
            fields["paused_reason"] = self.pause.reason.value
            if self.pause.message is not None:
                fields["paused_message"] = self.pause.message
        if self.prefetched:
            fields["prefetched"] = "1"
        fields |= {k: v for k, v in (("run_as", self.run_as), ("rolled_back_by", self.rolled_back_by)) if v}
        if self.approval is not None:
            fields["approval"] = self.approval.encode()
        if self.scan_outcome is not None:
            fields["scan_outcome"] = self.scan_outcome.value
        if self.scan_summary is not None:
            fields["scan_summary"] = json.dumps(dict(self.scan_summary), separators=(",", ":"))
        if self.held_from is not None:
            fields["held_from"] = str(self.held_from)
        return fields


def decode_hash(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    """A hash as redis-py returns it (bytes), as strings."""
    return {k.decode(): v.decode() for k, v in raw.items()}


def committed(raw: Mapping[str, str]) -> bool:
    """Whether a job hash is a committed job's (not empty, not still being staged)."""
    return bool(raw) and raw.get("state") != JobState.STAGING
