"""Steering a job after submission: run a dry run for real, resume a paused job, roll a job back."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.context import ApiContext
from api.deps import WRITES, Authenticated, Context, ScopedJob
from api.errors import OUTAGES, ApiError
from api.schemas import JobAccepted, error_responses
from jobs.audit import AuditAction
from jobs.models import SeatPolicy

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("/{job_id}/run", status_code=202, response_model=JobAccepted, dependencies=[WRITES],
             responses=error_responses(401, 403, 404, 409, 429, 503))
async def run(job: ScopedJob, context: Context, who: Authenticated,
              on_seat_shortage: Annotated[SeatPolicy, Query()] = SeatPolicy.FAIL) -> Response:
    """Start the real job of a finished dry run (it reads every user again: the tenant may have moved on)."""
    with context.lanes.submissions_per_key.hold(who.name):  # it stages the whole input again
        accepted = await context.lanes.submission(context.submitter.run_planned, job.id, owner=who.name,
                                                  seat_policy=on_seat_shortage)
    undone = context.store.job_fields(accepted.id, "rollback_of").get("rollback_of")
    if undone is None:  # a job submitted from a dry run's input
        await run_in_threadpool(_audit, context, job.tenant, who.name, AuditAction.SUBMITTED, accepted.id,
                                {"planned_from": job.id, "rows": accepted.total, "dry_run": False,
                                 "on_seat_shortage": on_seat_shortage.value})
    else:  # the run of a rollback's preview is that rollback
        await run_in_threadpool(_audit, context, job.tenant, who.name, AuditAction.ROLLBACK_REQUESTED, undone,
                                {"rollback_job": accepted.id, "users": accepted.total, "dry_run": False,
                                 "planned_from": job.id})
    answer = JobAccepted(id=accepted.id, status="queued", total=accepted.total, warnings=list(accepted.warnings))
    return JSONResponse(status_code=202, content=answer.model_dump(), headers={"Location": f"/v1/jobs/{accepted.id}"})


@router.post("/{job_id}/resume", status_code=202, dependencies=[WRITES], responses=error_responses(401, 403, 404, 409))
def resume(job: ScopedJob, context: Context, who: Authenticated) -> dict[str, Any]:
    """Resume a paused job now (after buying seats or fixing the tenant profile)."""
    reason = context.store.job_fields(job.id, "paused_reason").get("paused_reason")
    chunks = context.store.resume(job.id)
    if chunks is None:
        raise ApiError(409, f"job {job.id} is not paused")
    for n in chunks:
        context.send(job.id, n, 0.0)
    _audit(context, job.tenant, who.name, AuditAction.RESUMED, job.id, {"reason": reason, "by": "request"})
    progress = context.store.progress(job.id)
    return {"id": job.id, "resumed": True, "status": progress.status.value if progress else "running"}


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
        accepted = await context.lanes.submission(context.submitter.rollback, job.id, owner=who.name,
                                                  dry_run=dry_run, seat_policy=on_seat_shortage)
    details = {"rollback_job": accepted.id, "users": accepted.total, "dry_run": accepted.dry_run}
    await run_in_threadpool(_audit, context, job.tenant, who.name, AuditAction.ROLLBACK_REQUESTED, job.id, details)
    answer = JobAccepted(id=accepted.id, status="queued", total=accepted.total, warnings=list(accepted.warnings),
                         dry_run=accepted.dry_run)
    return JSONResponse(status_code=202, content=answer.model_dump(), headers={"Location": f"/v1/jobs/{accepted.id}"})


def _audit(context: ApiContext, tenant: str, actor: str, action: AuditAction, job_id: str,
           details: dict[str, Any]) -> None:
    """Record a person's action on a job already done: a store outage is logged, the action stands."""
    try:
        context.audit.append(tenant, actor, action, job=job_id, details=details)
    except OUTAGES:
        log.exception("%s of job %s by %s done, but not recorded in the audit trail", action.value, job_id, actor)
