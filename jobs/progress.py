"""A job's progress from its stored counters: status, current rate and ETA (pure; the store reads)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobs.models import JobStatus, iso_time

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

    def to_json(self) -> dict[str, Any]:
        """The API's job shape."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "status": self.status.value,
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "pending": self.pending,
            "throttled": self.throttled,
            "retries": self.retries,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "rate_per_s": round(self.rate_per_s, 2),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 2),
            "source": self.source,
            "warnings": list(self.warnings),
        }


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
    """The job's status from its record (the `bl:job:{id}` hash) and counters."""
    if record.get("state") == "failed":
        return JobStatus.FAILED
    if pending == 0:
        if "cancel_requested" in record and cancelled:
            return JobStatus.CANCELLED
        return JobStatus.COMPLETED_WITH_ERRORS if failed or cancelled else JobStatus.COMPLETED
    if started_at is None:
        return JobStatus.QUEUED
    return JobStatus.RUNNING


def job_progress(job_id: str, record: Mapping[str, str], *, recent_results: int, now: float,
                 ceiling_rate_per_s: float | None = None) -> JobProgress:
    """A committed job's progress from its record and the results counted in the rate window."""

    def count(name: str) -> int:
        return int(record.get(name) or 0)

    def moment(name: str) -> float | None:
        return float(record[name]) if name in record else None

    total, succeeded, failed, cancelled = count("total"), count("succeeded"), count("failed"), count("cancelled")
    done = succeeded + failed + cancelled
    pending = max(0, total - done)
    started_at = moment("started_at")
    rate = rate_per_s(recent_results=recent_results, done=done, pending=pending, started_at=started_at, now=now)
    return JobProgress(
        id=job_id,
        tenant=record.get("tenant", ""),
        status=job_status(record, pending=pending, failed=failed, cancelled=cancelled, started_at=started_at),
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
        rate_per_s=rate,
        eta_s=eta_s(pending, rate, ceiling_rate_per_s),
        chunks=count("chunks"),
        chunks_done=count("chunks_done"),
        source=record.get("source", ""),
        warnings=tuple(json.loads(record.get("warnings") or "[]")),
    )
