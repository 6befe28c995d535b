"""Steering a job after submission: run a dry run for real, resume a paused job."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from api.deps import Authenticated, Context, ScopedJob
from api.errors import ApiError
from api.schemas import JobAccepted, error_responses
from jobs.models import SeatPolicy

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post("/{job_id}/run", status_code=202, response_model=JobAccepted,
             responses=error_responses(401, 404, 409, 503))
async def run(job: ScopedJob, context: Context, who: Authenticated,
              on_seat_shortage: Annotated[SeatPolicy, Query()] = SeatPolicy.FAIL) -> Response:
    """Start the real job of a finished dry run (it reads every user again: the tenant may have moved on)."""
    accepted = await run_in_threadpool(context.submitter.run_planned, job.id, owner=who.name,
                                       seat_policy=on_seat_shortage)
    answer = JobAccepted(id=accepted.id, status="queued", total=accepted.total, warnings=list(accepted.warnings))
    return JSONResponse(status_code=202, content=answer.model_dump(), headers={"Location": f"/v1/jobs/{accepted.id}"})


@router.post("/{job_id}/resume", status_code=202, responses=error_responses(401, 404, 409))
def resume(job: ScopedJob, context: Context) -> dict[str, Any]:
    """Resume a paused job now (after buying seats or fixing the tenant profile)."""
    chunks = context.store.resume(job.id)
    if chunks is None:
        raise ApiError(409, f"job {job.id} is not paused")
    for n in chunks:
        context.send(job.id, n, 0.0)
    progress = context.store.progress(job.id)
    return {"id": job.id, "resumed": True, "status": progress.status.value if progress else "running"}
