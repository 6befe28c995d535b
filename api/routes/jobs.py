"""The jobs resource: submit, list, progress, results, cancel."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from api.context import ApiContext
from api.deps import (
    WRITES,
    Authenticated,
    Caller,
    Context,
    CsvTenant,
    IdempotencyKey,
    ScopedJob,
    SubmitOptions,
    VisibleJob,
)
from api.errors import ApiError
from api.plan_view import job_json, known_catalog
from api.results import RESULT_STATUSES, Page, blocks, csv_lines, json_lines, result_rows
from api.schemas import JobAccepted, JobOut, accepted, error_responses
from api.submissions import accept_submission
from jobs import control
from jobs.approval import NotAwaiting
from jobs.audit import AuditAction
from jobs.models import JobStatus
from jobs.progress import awaiting_approval

CANCEL_WAIT_S = 30.0
CANCEL_POLL_S = 0.05
MAX_RESULTS_PAGE = 1000

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
RESULT_STATUS_PATTERN = f"^({'|'.join(RESULT_STATUSES)})$"

# The body is read by hand (three formats, streamed), so the schema is declared here.
SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"},
                                                            "callback_url": {"type": "string"}}}
            },
            "application/json": {"schema": {"type": "object"}},
        },
        "required": True,
    }
}


@router.post("", status_code=202, response_model=JobAccepted, openapi_extra=SUBMIT_BODY, dependencies=[WRITES],
             responses={200: {"model": JobAccepted, "description": "The job an earlier request with the same"
                                                                    " Idempotency-Key created"},
                        **error_responses(400, 401, 403, 408, 409, 413, 415, 422, 429, 503)})
async def submit(request: Request, context: Context, who: Authenticated, tenant: CsvTenant,
                 options: SubmitOptions, idempotency_key: IdempotencyKey = None) -> Response:
    """Submit a job: a CSV (`text/csv` body or multipart field `file`, `?tenant=`) or JSON.

    `?dry_run=true` plans without writing; a real job whose seats are short is refused (409)
    unless `?on_seat_shortage=wait`. With an `Idempotency-Key` header, repeating the same request
    within 24 h returns the first job (200) instead of creating another; the same key with a
    different request is refused (409).
    """
    receipt = await accept_submission(request, context, who, tenant, idempotency_key, options)
    return accepted(receipt.answer, 200 if receipt.replayed else 202)


@router.get("", responses=error_responses(401))
def list_jobs(context: Context, who: Authenticated,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """Recent jobs visible to this API key, newest first."""
    out = []
    for job_id in context.store.recent_jobs(limit * 4):
        progress = context.store.progress(job_id)
        if progress is not None and who.allows(progress.tenant):
            out.append(progress.to_json())
        if len(out) >= limit:
            break
    return {"value": out}


@router.get("/{job_id}", response_model=JobOut, response_model_exclude_unset=True,
            responses=error_responses(401, 404))
def get_job(job: ScopedJob, context: Context) -> dict[str, Any]:
    """A job's progress: counters, status, current rate and ETA, and what its plan found."""
    progress = context.store.progress(job.id, ceiling_rate_per_s=context.ceiling_for(job.tenant))
    if progress is None:
        raise HTTPException(404, f"job {job.id} not found")
    return job_json(progress, context)


@router.get("/{job_id}/results", responses=error_responses(401, 404))
def results(
    job: ScopedJob,
    context: Context,
    status: Annotated[str | None, Query(pattern=RESULT_STATUS_PATTERN)] = None,
    format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
    offset: Annotated[int, Query(ge=0, le=2**31, description="Rows to skip (of those in `status`).")] = 0,
    limit: Annotated[int | None, Query(ge=1, le=MAX_RESULTS_PAGE,
                                       description="At most this many rows; JSON then gives `next_offset`.")] = None,
) -> Response:
    """One row per user; `?status=failed&format=csv` gives a file that can be fixed and resubmitted.

    `?limit=50&offset=100` pages through them (the console's plan preview does).
    """
    rows = Page(result_rows(context.store, job.id, status), offset, limit)
    catalog = known_catalog(context, job.tenant)
    if format == "csv":
        record = context.store.job(job.id)
        columns = list(record.spec.kept_columns) if record is not None and record.spec.kept_columns else None
        dated = record is not None and bool(record.spec.schedule)
        return StreamingResponse(blocks(csv_lines(rows, catalog, columns, dated=dated)),
                                 media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="{job.id}-results.csv"'})
    return StreamingResponse(blocks(json_lines(rows, catalog)), media_type="application/json")


@router.post("/{job_id}/cancel", status_code=202, dependencies=[WRITES],
             responses=error_responses(401, 403, 404, 409, 503))
async def cancel(job: ScopedJob, context: Context, who: Authenticated,
                 scheduled_only: Annotated[bool, Query(description="Cancel only the rows still waiting for their"
                                                                   " day; the others go on.")] = False,
                 ) -> dict[str, Any]:
    """Cancel a job: returns once no write for it can still go out; 409 when it has ended already.

    A job waiting for approval is withdrawn: it ends cancelled and its seats are released. Rows
    waiting for their effective date are recorded cancelled at once (nothing is written for them);
    with `?scheduled_only=true` only they are, and the job's other rows go on.
    """
    store = context.store
    if scheduled_only:
        _refuse_if_waiting(context, job)
    elif _withdrawn(context, job, who):
        return {"id": job.id, "cancel_requested": True, "writes_in_flight": 0, "status": JobStatus.CANCELLED.value}
    _refuse_if_ended(context, job)
    if not scheduled_only:
        control.cancel(store, context.send, job.id)
    held = control.cancel_held(store, context.send, job.id, now=time.time())
    if scheduled_only and not held:
        raise ApiError(409, f"job {job.id} has no rows waiting for their day: nothing was cancelled")
    context.audit.append(job.tenant, who.name, AuditAction.CANCELLED, job=job.id,
                         details={"scheduled_rows": held, "scheduled_only": scheduled_only} if held else None)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while store.writes_in_flight(job.id) and time.monotonic() < deadline:
        await asyncio.sleep(CANCEL_POLL_S)
    in_flight = control.settle_cancel(store, context.seats, job.id, job.tenant)
    progress = store.progress(job.id)
    return {
        "id": job.id,
        "cancel_requested": not scheduled_only,
        "scheduled_cancelled": held,
        "writes_in_flight": in_flight,
        "status": (progress.status if progress else JobStatus.CANCELLED).value,
    }


def _withdrawn(context: ApiContext, job: VisibleJob, who: Caller) -> bool:
    """Withdraw the job if it waits for approval (recorded as cancelled); False when it does not wait."""
    try:
        context.approvals().withdraw(job.id, who.name)
    except NotAwaiting:
        return False
    context.audit.append(job.tenant, who.name, AuditAction.CANCELLED, job=job.id, details={"waited_for_approval": True})
    return True


def _refuse_if_waiting(context: ApiContext, job: VisibleJob) -> None:
    """409 for a job waiting for approval: it holds no row for its day, and only its whole withdrawal cancels it."""
    record = context.store.job(job.id)
    if record is not None and awaiting_approval(record):
        raise ApiError(409, f"job {job.id} waits for approval: none of its rows waits for its day yet (they wait"
                            " in its run, once approved); cancel the whole job, or reject it")


def _refuse_if_ended(context: ApiContext, job: VisibleJob) -> None:
    """409 for a job that has ended: there is nothing to cancel, and nothing is recorded."""
    progress = context.store.progress(job.id)
    if progress is not None and progress.status.is_terminal:
        raise ApiError(409, f"job {job.id} has ended ({progress.status.value}): there is nothing to cancel")
