"""A job's progress from its record: status, current rate and ETA (pure; the store reads)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from jobs.counters import PlanCounters
from jobs.models import JobStatus, LicenseMode, UserStatus, iso_time
from jobs.record import ApprovalDecision, JobRecord, JobSpec, ScanOutcome
from jobs.schedule import rows_ahead

# Results per second are counted per wall-clock second; the current rate is the mean of the last
# RATE_WINDOW_S whole seconds (the running second is left out: it is still filling).
RATE_WINDOW_S = 10
# A measured rate this far above the throttle's ceiling is a burst (the initial bucket), not the
# pace the rest of the job will go at.
BURST_FACTOR = 1.5


@dataclass(frozen=True)
class JobProgress:
    """A job's counters as read in O(1) for the progress endpoint."""

    id: str
    tenant: str
    status: JobStatus
    total: int
    succeeded: int
    failed: int
    cancelled: int
    pending: int
    throttled: int
    retries: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    rate_per_s: float
    eta_s: float | None
    chunks: int
    chunks_done: int
    source: str
    warnings: tuple[str, ...]
    dry_run: bool = False
    kind: str = "job"
    unchanged: int = 0
    waiting_for_replication: int = 0
    would_change: int = 0
    would_fail: int = 0
    plan: PlanCounters | None = None
    paused_reason: str | None = None
    paused_message: str | None = None
    paused_at: float | None = None
    next_probe_at: float | None = None
    links: tuple[tuple[str, str], ...] = ()
    mode: str = "add"
    assignment: str = "any"
    # How the input was read (jobs.input.reading's `input` shape); None for jobs without an upload.
    reading: dict[str, Any] | None = None
    # A job that waits for approval once planned: who submitted it and the decision (None: no approval needed).
    approval: dict[str, Any] | None = None
    awaiting_approval: bool = False
    # A job built from a scan of the tenant: what it looked for and what the scan counted.
    scan: dict[str, Any] | None = None
    # The rows per day they are due (jobs.schedule.Day.view), and how many still wait for theirs.
    schedule: tuple[dict[str, object], ...] = ()
    scheduled: int = 0

    def to_json(self) -> dict[str, Any]:
        """The API's job shape."""
        data: dict[str, Any] = {
            "id": self.id,
            "tenant": self.tenant,
            "kind": self.kind,
            "dry_run": self.dry_run,
            "status": self.status.value,
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "unchanged": self.unchanged,
            "pending": self.pending,
            "waiting_for_replication": self.waiting_for_replication,
            "throttled": self.throttled,
            "retries": self.retries,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "rate_per_s": round(self.rate_per_s, 2),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 2),
            "source": self.source,
            "warnings": list(self.warnings),
            "plan": self.plan.to_json() if self.plan else None,
            "paused_reason": self.paused_reason,
            "paused_message": self.paused_message,
            "paused_at": _iso(self.paused_at),
            "next_probe_at": _iso(self.next_probe_at),
            **dict(self.links),
            "mode": self.mode,
            "assignment": self.assignment,
            "input": self.reading,
            "awaiting_approval": self.awaiting_approval,
            "approval": self.approval,
        }
        if self.scan is not None:
            data["scan"] = self.scan
        if self.dry_run or self.approval is not None:
            data.update(would_change=self.would_change, would_fail=self.would_fail)
        if self.schedule:
            data.update(schedule=list(self.schedule), scheduled=self.scheduled)
        return data


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso_time(ts)


def rate_per_s(*, recent_results: int, done: int, pending: int, started_at: float | None, now: float) -> float:
    """Results per second: `recent_results` (those of the last RATE_WINDOW_S seconds) over the window.

    In a job's first window, before a whole second has been counted, it is the job's average so
    far (`done` since `started_at`); once nothing is pending it is 0.
    """
    if pending == 0:
        return 0.0
    rate = recent_results / RATE_WINDOW_S
    if rate == 0.0 and started_at is not None and now - started_at < RATE_WINDOW_S:
        return done / max(now - started_at, 1e-3)
    return rate


def eta_s(pending: int, rate: float, ceiling_rate_per_s: float | None) -> float | None:
    """Seconds until the pending users are done, or None when there is no rate to go by.

    The measured rate is the basis; before there is one, the throttle's ceiling. A measured rate
    more than BURST_FACTOR times the ceiling is a burst, so the ceiling is used instead.
    """
    if pending == 0:
        return None
    basis = rate or ceiling_rate_per_s
    if rate and ceiling_rate_per_s and rate > ceiling_rate_per_s * BURST_FACTOR:
        basis = ceiling_rate_per_s
    return pending / basis if basis else None


def job_status(record: JobRecord, now: float | None = None) -> JobStatus:
    """The job's status from its record (at `now`, by default the present).

    Every job reads before it writes: `planning` until its first write (a dry run never writes
    and ends `planned`); `paused` while a tenant-wide fault or a seat shortage holds it;
    `scheduled` while every pending user waits for its day. A job built from a scan of the tenant
    is `planning` while the scan runs (it has no users yet), `cancelled` when cancelled during it
    and `completed_with_errors` when the tenant could not be read.
    """
    if record.scanning:
        if record.finished_at is not None:  # its scan could not run (tenant not configured here, or kept dying)
            return JobStatus.COMPLETED_WITH_ERRORS
        return JobStatus.QUEUED if record.started_at is None else JobStatus.PLANNING
    if record.scan_outcome is ScanOutcome.CANCELLED:
        return JobStatus.CANCELLED
    if record.scan_outcome is ScanOutcome.FAILED:
        return JobStatus.COMPLETED_WITH_ERRORS
    if record.pending == 0:
        if record.cancel_requested and record.count(UserStatus.CANCELLED):
            return JobStatus.CANCELLED
        if record.approval is not None and record.approval.decision is not ApprovalDecision.APPROVED:
            return JobStatus.CANCELLED  # rejected, or withdrawn while it waited
        if record.spec.plans_only:
            return JobStatus.PLANNED
        ended_badly = record.count(UserStatus.FAILED) or record.count(UserStatus.CANCELLED)
        return JobStatus.COMPLETED_WITH_ERRORS if ended_badly else JobStatus.COMPLETED
    if record.pause is not None and not record.cancel_requested:
        return JobStatus.PAUSED
    if record.held_from is not None and all_rows_wait(record.spec, record.pending, time.time() if now is None else now):
        return JobStatus.SCHEDULED
    if record.started_at is None:
        return JobStatus.QUEUED
    if record.spec.plans_only or record.first_write_at is None:
        return JobStatus.PLANNING
    return JobStatus.RUNNING


def all_rows_wait(spec: JobSpec, pending: int, now: float) -> bool:
    """Whether every pending row of a real job waits for its day at `now` (the job is then `scheduled`)."""
    ahead = 0 if spec.plans_only else rows_ahead(spec.schedule, now)
    return ahead > 0 and pending <= ahead


def accepted_status(spec: JobSpec, total: int, now: float) -> JobStatus:
    """The status of a job just committed, as `job_status` tells it: `scheduled` or `queued`."""
    return JobStatus.SCHEDULED if all_rows_wait(spec, total, now) else JobStatus.QUEUED


def awaiting_approval(record: JobRecord) -> bool:
    """Whether the job is planned and waits for another key's approval (nobody decided yet)."""
    return record.spec.needs_approval and record.approval is None and job_status(record) is JobStatus.PLANNED


def approval_json(record: JobRecord) -> dict[str, Any] | None:
    """The approval part of the job JSON: who submitted it, and the decision once taken; None when not needed."""
    if not record.spec.needs_approval:
        return None
    decided = record.approval
    return {"required": True, "submitted_by": record.spec.owner,
            "decision": decided.decision.value if decided else None, "by": decided.by if decided else None,
            "at": _iso(decided.at) if decided else None, "reason": decided.reason if decided else None}


def job_progress(record: JobRecord, *, recent_results: int, now: float, ceiling_rate_per_s: float | None = None,
                 plan: PlanCounters | None = None, waiting: int = 0) -> JobProgress:
    """A committed job's progress from its record and the results counted in the rate window."""
    pending = record.pending
    rate = rate_per_s(recent_results=recent_results, done=record.done, pending=pending, started_at=record.started_at,
                      now=now)
    status = job_status(record, now)
    paused = record.pause if status is JobStatus.PAUSED else None
    return JobProgress(
        id=record.id,
        tenant=record.tenant,
        status=status,
        total=record.total,
        succeeded=record.count(UserStatus.SUCCEEDED),
        failed=record.count(UserStatus.FAILED),
        cancelled=record.count(UserStatus.CANCELLED),
        pending=pending,
        throttled=record.throttled,
        retries=record.retries,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at if pending == 0 else None,
        rate_per_s=0.0 if status is JobStatus.PAUSED else rate,
        # No ETA while paused: nothing moves until the cause is gone, and when is not known.
        eta_s=None if status is JobStatus.PAUSED else eta_s(pending, rate, ceiling_rate_per_s),
        chunks=record.chunks,
        chunks_done=record.chunks_done,
        source=record.spec.source,
        warnings=record.spec.warnings,
        dry_run=record.spec.dry_run,
        kind=record.spec.kind.value,
        unchanged=record.count(UserStatus.UNCHANGED),
        waiting_for_replication=min(waiting, pending),
        would_change=record.count(UserStatus.WOULD_CHANGE),
        would_fail=record.count(UserStatus.WOULD_FAIL),
        plan=plan,
        paused_reason=paused.reason.value if paused else None,
        paused_message=paused.message if paused else None,
        paused_at=paused.at if paused else None,
        next_probe_at=paused.next_probe_at if paused else None,
        links=record.links,
        mode=(record.spec.mode or LicenseMode.ADD).value,
        assignment=record.spec.assignment.value,
        reading=dict(record.spec.reading) if record.spec.reading is not None else None,
        approval=approval_json(record),
        awaiting_approval=awaiting_approval(record),
        scan=_scan_json(record),
        schedule=tuple(day.view() for day in record.spec.schedule),
        scheduled=rows_ahead(record.spec.schedule, now) if record.held_from is not None else 0,
    )


def _scan_json(record: JobRecord) -> dict[str, Any] | None:
    """A scan-built job's `scan`: what it was asked, whether the scan ended, and what it counted."""
    if record.spec.scan is None:
        return None
    outcome = record.scan_outcome.value if record.scan_outcome is not None else None
    request = {k: v for k, v in record.spec.scan.items() if k != "chunk_size"}  # how it is stored, not asked
    return {"request": request, "outcome": outcome, "summary": dict(record.scan_summary or {})}
