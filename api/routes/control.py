"""Steering a job after submission: run a dry run for real, resume a paused job, roll a job back."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.context import audit_done
from api.deps import WRITES, Authenticated, Context, ScopedJob
from api.errors import ApiError
from api.schemas import JobAccepted, accepted, error_responses
from jobs import control
from jobs.audit import AuditAction
from jobs.models import JobStatus, SeatPolicy
from jobs.schedule import held_summary

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("/{job_id}/run", status_code=202, response_model=JobAccepted, dependencies=[WRITES],
             responses=error_responses(401, 403, 404, 409, 429, 503))
async def run(job: ScopedJob, context: Context, who: Authenticated,
              on_seat_shortage: Annotated[SeatPolicy, Query()] = SeatPolicy.FAIL) -> Response:
    """Start the real job of a finished dry run (it reads every user again: the tenant may have moved on)."""
    with context.lanes.submissions_per_key.hold(who.name):  # it stages the whole input again
        submitted = await context.lanes.submission(context.submitter.run_planned, job.id, owner=who.name,
                                                   seat_policy=on_seat_shortage)
    if submitted.rollback_of is None:  # a job submitted from a dry run's input
        await run_in_threadpool(audit_done, context, job.tenant, who.name, AuditAction.SUBMITTED, submitted.id,
                                {"planned_from": job.id, **submitted.audited_rows(), "dry_run": False,
                                 "on_seat_shortage": on_seat_shortage.value,
                                 **({"needs_approval": True} if submitted.needs_approval else {}),
                                 **held_summary(submitted.held)})
    else:  # the run of a rollback's preview is that rollback
        await run_in_threadpool(audit_done, context, job.tenant, who.name, AuditAction.ROLLBACK_REQUESTED,
                                submitted.rollback_of, {"rollback_job": submitted.id, "users": submitted.total,
                                                        "dry_run": False, "planned_from": job.id})
    return accepted(JobAccepted.of(submitted).model_dump(mode="json"))


@router.post("/{job_id}/resume", status_code=202, dependencies=[WRITES], responses=error_responses(401, 403, 404, 409))
def resume(job: ScopedJob, context: Context, who: Authenticated) -> dict[str, Any]:
    """Resume a paused job now (after buying seats or fixing the tenant profile)."""
    record = context.store.job(job.id)
    reason = record.pause.reason.value if record is not None and record.pause is not None else None
    if control.resume(context.store, context.send, job.id) is None:
        raise ApiError(409, f"job {job.id} is not paused")
    audit_done(context, job.tenant, who.name, AuditAction.RESUMED, job.id, {"reason": reason, "by": "request"})
    progress = context.store.progress(job.id)
    return {"id": job.id, "resumed": True, "status": (progress.status if progress else JobStatus.RUNNING).value}


@router.post("/{job_id}/rollback", status_code=202, response_model=JobAccepted, dependencies=[WRITES],
             responses=error_responses(401, 403, 404, 409, 429, 503))
async def rollback(
    job: ScopedJob, context: Context, who: Authenticated,
    dry_run: Annotated[bool, Query(description="Plan the rollback only: read every user, write nothing.")] = False,
    on_seat_shortage: Annotated[SeatPolicy, Query(description="fail: refuse with 409; wait: pause until seats "
                                                              "appear.")] = SeatPolicy.FAIL,
) -> Response:
    """Return every user the job changed to its state before the job, where it is safe (a new job).

    A user changed since the job is left alone and ends `failed`, reason `drifted`. `409` when the
    job is still running (cancel it first), is a dry run, changed no user, or was rolled back already.
    """
    await run_in_threadpool(context.check_broker)  # before anything is written
    with context.lanes.submissions_per_key.hold(who.name):  # it reads every result and stages
        submitted = await context.lanes.submission(context.submitter.rollback, job.id, owner=who.name,
                                                   dry_run=dry_run, seat_policy=on_seat_shortage)
    details = {"rollback_job": submitted.id, "users": submitted.total, "dry_run": submitted.dry_run}
    await run_in_threadpool(audit_done, context, job.tenant, who.name, AuditAction.ROLLBACK_REQUESTED, job.id, details)
    return accepted(JobAccepted.of(submitted).model_dump(mode="json"))

