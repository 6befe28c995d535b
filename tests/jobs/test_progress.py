"""Progress maths without Redis: rate over the window, ETA against the throttle's ceiling, status."""

from __future__ import annotations

import json

import pytest

from jobs.models import JobStatus
from jobs.progress import RATE_WINDOW_S, eta_s, job_progress, job_status, rate_per_s
from jobs.record import JobRecord

NOW = 1_700_000_100.25


def record(**fields: object) -> JobRecord:
    """A job record as the store reads it from its hash (`fields` as they are stored)."""
    base: dict[str, object] = {"id": "j1", "tenant": "sim", "state": "queued", "total": 100, "succeeded": 0,
                               "failed": 0, "cancelled": 0, "created_at": 1_700_000_000.5, "source": "csv",
                               "warnings": "[]"}
    base.update(fields)
    return JobRecord.from_hash({k: str(v) for k, v in base.items()})


def test_rate_is_the_mean_of_the_window() -> None:
    assert rate_per_s(recent_results=50, done=80, pending=20, started_at=NOW - 60, now=NOW) == 50 / RATE_WINDOW_S


def test_in_the_first_window_the_rate_is_the_average_so_far() -> None:
    # Nothing counted in a whole second yet, 12 results in the 4 s since the start.
    assert rate_per_s(recent_results=0, done=12, pending=88, started_at=NOW - 4, now=NOW) == 3.0
    # After the first window an empty window means the job is stalled, not fast.
    assert rate_per_s(recent_results=0, done=12, pending=88, started_at=NOW - RATE_WINDOW_S, now=NOW) == 0.0
    assert rate_per_s(recent_results=0, done=0, pending=100, started_at=None, now=NOW) == 0.0


def test_a_finished_job_has_no_rate() -> None:
    assert rate_per_s(recent_results=40, done=100, pending=0, started_at=NOW - 5, now=NOW) == 0.0


@pytest.mark.parametrize(
    ("pending", "rate", "ceiling", "expected"),
    [
        (50, 5.0, None, 10.0),  # the measured rate
        (50, 5.0, 20.0, 10.0),  # below the ceiling: still the measured rate
        (50, 29.0, 20.0, 50 / 29.0),  # above the ceiling, but within the burst factor
        (50, 31.0, 20.0, 2.5),  # a burst far above the ceiling: the ceiling
        (50, 0.0, 20.0, 2.5),  # no rate yet: the ceiling
        (50, 0.0, None, None),  # nothing to go by
        (0, 5.0, 20.0, None),  # nothing pending
    ],
)
def test_eta(pending: int, rate: float, ceiling: float | None, expected: float | None) -> None:
    assert eta_s(pending, rate, ceiling) == expected


@pytest.mark.parametrize(
    ("fields", "pending", "failed", "cancelled", "started_at", "expected"),
    [
        ({}, 10, 0, 0, None, JobStatus.QUEUED),
        ({}, 10, 0, 0, NOW, JobStatus.PLANNING),  # reading users, nothing written yet
        ({"first_write_at": NOW}, 10, 0, 0, NOW, JobStatus.RUNNING),
        ({"dry_run": "1", "first_write_at": NOW}, 10, 0, 0, NOW, JobStatus.PLANNING),
        ({"dry_run": "1"}, 0, 0, 0, NOW, JobStatus.PLANNED),
        ({"paused_reason": "no_free_seat", "first_write_at": NOW}, 10, 0, 0, NOW, JobStatus.PAUSED),
        ({"paused_reason": "no_free_seat", "cancel_requested": NOW}, 10, 0, 0, NOW, JobStatus.PLANNING),
        ({}, 0, 0, 0, NOW, JobStatus.COMPLETED),
        ({}, 0, 1, 0, NOW, JobStatus.COMPLETED_WITH_ERRORS),
        ({}, 0, 0, 1, NOW, JobStatus.COMPLETED_WITH_ERRORS),  # cancelled users without a job cancel
        ({"cancel_requested": NOW}, 0, 0, 3, NOW, JobStatus.CANCELLED),
        ({"cancel_requested": NOW}, 0, 0, 0, NOW, JobStatus.COMPLETED),  # cancelled after every user ended
    ],
)
def test_status(fields: dict[str, object], pending: int, failed: int, cancelled: int, started_at: float | None,
                expected: JobStatus) -> None:
    # `pending` users of a job whose others ended failed or cancelled (or succeeded, to make up 10).
    succeeded = 10 - pending - failed - cancelled if pending < 10 else 0
    counts = {"total": pending + failed + cancelled + succeeded, "failed": failed, "cancelled": cancelled,
              "succeeded": succeeded}
    moments = {"started_at": started_at} if started_at is not None else {}
    status = job_status(record(**fields, **counts, **moments))
    assert status is expected


def test_job_progress_from_a_running_record() -> None:
    raw = record(succeeded=30, failed=5, cancelled=0, throttled=4, retries=7, chunks=10, chunks_done=3,
                 started_at=NOW - 60, first_write_at=NOW - 59, warnings=json.dumps(["column 'x' ignored"]))
    progress = job_progress(raw, recent_results=20, now=NOW, ceiling_rate_per_s=None)
    assert (progress.pending, progress.rate_per_s, progress.eta_s) == (65, 2.0, 32.5)
    assert progress.status is JobStatus.RUNNING
    assert progress.finished_at is None
    assert progress.to_json() == {
        "id": "j1", "tenant": "sim", "kind": "job", "dry_run": False, "status": "running", "total": 100,
        "succeeded": 30, "failed": 5, "cancelled": 0, "unchanged": 0, "pending": 65, "waiting_for_replication": 0,
        "throttled": 4, "retries": 7,
        "created_at": "2023-11-14T22:13:20.500Z", "started_at": "2023-11-14T22:14:00.250Z", "finished_at": None,
        "rate_per_s": 2.0, "eta_s": 32.5, "source": "csv", "warnings": ["column 'x' ignored"], "plan": None,
        "paused_reason": None, "paused_message": None, "paused_at": None, "next_probe_at": None,
        "mode": "add", "assignment": "any", "input": None,
    }


def test_a_paused_job_has_no_eta_and_says_why() -> None:
    raw = record(succeeded=30, started_at=NOW - 60, first_write_at=NOW - 59, paused_reason="no_free_seat",
                 paused_message="no seats", paused_at=NOW - 5, next_probe_at=NOW + 55)
    progress = job_progress(raw, recent_results=20, now=NOW, ceiling_rate_per_s=10)
    assert (progress.status, progress.eta_s, progress.rate_per_s) == (JobStatus.PAUSED, None, 0.0)
    shown = progress.to_json()
    assert (shown["paused_reason"], shown["paused_at"], shown["next_probe_at"]) == (
        "no_free_seat", "2023-11-14T22:14:55.250Z", "2023-11-14T22:15:55.250Z")


def test_job_progress_reports_finished_at_only_when_nothing_is_pending() -> None:
    raw = record(total=3, succeeded=2, failed=1, started_at=NOW - 10, finished_at=NOW - 1)
    done = job_progress(raw, recent_results=3, now=NOW)
    assert (done.status, done.finished_at, done.rate_per_s, done.eta_s) == (
        JobStatus.COMPLETED_WITH_ERRORS, NOW - 1, 0.0, None)
    # While users are pending, a finished_at in the record is not reported.
    running = job_progress(record(total=4, succeeded=2, failed=1, started_at=NOW - 10, finished_at=NOW - 1),
                           recent_results=3, now=NOW)
    assert running.finished_at is None
