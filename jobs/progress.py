"""A job's progress from its stored counters: status, current rate and ETA (pure; the store reads)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobs.models import USER_COUNTERS, JobStatus, iso_time

# Results per second are counted per wall-clock second; the current rate is the mean of the last
# RATE_WINDOW_S whole seconds (the running second is left out: it is still filling).
RATE_WINDOW_S = 10
# A measured rate this far above the throttle's ceiling is a burst (the initial bucket), not the
# pace the rest of the job will go at.
BURST_FACTOR = 1.5
# Job-record fields naming related jobs, shown as they are (a dry run and its real run, a rollback).
LINK_FIELDS = ("planned_from", "run_as", "rollback_of", "rolled_back_by")


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
    plan: PlanSummary | None = None
    paused_reason: str | None = None
    paused_message: str | None = None
    paused_at: float | None = None
    next_probe_at: float | None = None
    links: tuple[tuple[str, str], ...] = ()
    mode: str = "add"
    # How the input was read (jobs.input.reading's `input` shape); None for jobs without an upload.
    reading: dict[str, Any] | None = None

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
            "input": self.reading,
        }
        if self.dry_run:
            data.update(would_change=self.would_change, would_fail=self.would_fail)
        return data


@dataclass(frozen=True)
class PlanSummary:
    """What the job's plan found so far: changes, unchanged, predicted failures, warnings, seats."""

    changes: int
    unchanged: int
    planned: int
    predicted_failures: dict[str, int]
    warnings: dict[str, int]
    needed: dict[str, int]
    released: dict[str, int]

    @classmethod
    def from_counters(cls, counters: Mapping[str, int]) -> PlanSummary:
        """From the store's plan counters (`changes`, `fail:<reason>`, `need:<sku>`, ...)."""
        def prefixed(prefix: str) -> dict[str, int]:
            return {k[len(prefix):]: v for k, v in sorted(counters.items()) if k.startswith(prefix)}

        return cls(
            changes=counters.get("changes", 0),
            unchanged=counters.get("unchanged", 0),
            planned=counters.get("planned", 0),
            predicted_failures=prefixed("fail:"),
            warnings=prefixed("warn:"),
            needed=prefixed("need:"),
            released=prefixed("release:"),
        )

    def to_json(self) -> dict[str, Any]:
        """The `plan` shape with raw seat counts (`needed`, `released`); the API turns them into `seats`."""
        return {"changes": self.changes, "unchanged": self.unchanged,
                "planned": self.planned,
                "predicted_failures": self.predicted_failures, "warnings": self.warnings,
                "needed": self.needed, "released": self.released}


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


def job_status(record: Mapping[str, str], *, pending: int, failed: int, cancelled: int,
               started_at: float | None) -> JobStatus:
    """The job's status from its record (the `bl:job:{id}` hash) and counters.

    Every job reads before it writes: `planning` until its first write (a dry run never writes
    and ends `planned`); `paused` while a tenant-wide fault or a seat shortage holds it.
    """
    if record.get("state") == "failed":
        return JobStatus.FAILED
    dry_run = record.get("dry_run") == "1"
    if pending == 0:
        if "cancel_requested" in record and cancelled:
            return JobStatus.CANCELLED
        if dry_run:
            return JobStatus.PLANNED
        return JobStatus.COMPLETED_WITH_ERRORS if failed or cancelled else JobStatus.COMPLETED
    if "paused_reason" in record and "cancel_requested" not in record:
        return JobStatus.PAUSED
    if started_at is None:
        return JobStatus.QUEUED
    if dry_run or "first_write_at" not in record:
        return JobStatus.PLANNING
    return JobStatus.RUNNING


def record_status(record: Mapping[str, str]) -> JobStatus:
    """A committed job's status from its record alone (all a count of jobs by status needs)."""
    counts = {name: int(record.get(name) or 0) for name in ("total", "failed", "cancelled", *USER_COUNTERS)}
    pending = max(0, counts["total"] - sum(counts[name] for name in USER_COUNTERS))
    started_at = float(record["started_at"]) if "started_at" in record else None
    return job_status(record, pending=pending, failed=counts["failed"], cancelled=counts["cancelled"],
                      started_at=started_at)


def job_progress(job_id: str, record: Mapping[str, str], *, recent_results: int, now: float,
                 ceiling_rate_per_s: float | None = None, plan: Mapping[str, int] | None = None,
                 waiting: int = 0) -> JobProgress:
    """A committed job's progress from its record and the results counted in the rate window."""

    def count(name: str) -> int:
        return int(record.get(name) or 0)

    def moment(name: str) -> float | None:
        return float(record[name]) if name in record else None

    total, succeeded, failed, cancelled = count("total"), count("succeeded"), count("failed"), count("cancelled")
    done = sum(count(name) for name in USER_COUNTERS)
    pending = max(0, total - done)
    started_at = moment("started_at")
    rate = rate_per_s(recent_results=recent_results, done=done, pending=pending, started_at=started_at, now=now)
    status = job_status(record, pending=pending, failed=failed, cancelled=cancelled, started_at=started_at)
    return JobProgress(
        id=job_id,
        tenant=record.get("tenant", ""),
        status=status,
        total=total,
        succeeded=succeeded,
        failed=failed,
        cancelled=cancelled,
        pending=pending,
        throttled=count("throttled"),
        retries=count("retries"),
        created_at=float(record.get("created_at") or 0),
        started_at=started_at,
        finished_at=moment("finished_at") if pending == 0 else None,
        rate_per_s=0.0 if status is JobStatus.PAUSED else rate,
        # No ETA while paused: nothing moves until the cause is gone, and when is not known.
        eta_s=None if status is JobStatus.PAUSED else eta_s(pending, rate, ceiling_rate_per_s),
        chunks=count("chunks"),
        chunks_done=count("chunks_done"),
        source=record.get("source", ""),
        warnings=tuple(json.loads(record.get("warnings") or "[]")),
        dry_run=record.get("dry_run") == "1",
        kind=record.get("kind", "job"),
        unchanged=count("unchanged"),
        waiting_for_replication=min(waiting, pending),
        would_change=count("would_change"),
        would_fail=count("would_fail"),
        plan=PlanSummary.from_counters(plan) if plan is not None else None,
        paused_reason=record.get("paused_reason") if status is JobStatus.PAUSED else None,
        paused_message=record.get("paused_message") if status is JobStatus.PAUSED else None,
        paused_at=moment("paused_at") if status is JobStatus.PAUSED else None,
        next_probe_at=moment("next_probe_at") if status is JobStatus.PAUSED else None,
        links=tuple((k, record[k]) for k in LINK_FIELDS if k in record),
        mode=record.get("mode", "add"),
        reading=json.loads(record["input"]) if "input" in record else None,
    )
