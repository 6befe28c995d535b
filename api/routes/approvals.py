"""Deciding on a job that waits for approval: approve it (its run starts) or reject it (it ends cancelled)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.context import ApiContext, audit_done
from api.deps import READ_ONLY, Authenticated, Caller, Context, JobId
from api.errors import OUTAGES, ApiError
from api.schemas import JobAccepted, accepted, error_responses
from jobs.approval import MAX_REASON_CHARS, DecisionRefused, NotAwaiting, Refusal
from jobs.audit import AuditAction
from jobs.models import JobStatus
from jobs.schedule import held_summary
from jobs.submit import Submitted

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["approvals"])


class Rejection(BaseModel):
    """Why a job is rejected (optional): shown with the job and kept in the audit trail."""

    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS)


@dataclass(frozen=True)
class Decider:
    """A writing key that may use the job's tenant, about to decide on the job."""

    job_id: str
    tenant: str
    who: Caller


def decider(job_id: JobId, request: Request, context: Context, who: Authenticated) -> Decider:
    """The caller, if its key may decide on jobs of the job's tenant: 404 (another tenant's job), 403 (read-only).

    Each refusal of a job that exists is audited in the job's tenant, with the refusals (never evicting
    the trail).
    """
    tenant = context.store.job_tenant(job_id)
    if tenant is None:
        raise HTTPException(404, f"job {job_id} not found")
    if not who.allows(tenant):
        _refused(context, tenant, who.name, job_id, request, Refusal.TENANT)
        raise HTTPException(404, f"job {job_id} not found")
    if not who.key.may_write:
        _refused(context, tenant, who.name, job_id, request, Refusal.READ_ONLY)
        raise ApiError(403, READ_ONLY)
    return Decider(job_id, tenant, who)


@router.post("/{job_id}/approve", status_code=202, response_model=JobAccepted,
             responses=error_responses(401, 403, 404, 409, 429, 503))
async def approve(job_id: JobId, request: Request, context: Context, who: Authenticated) -> Response:
    """Approve a job that waits for approval: its run starts (a new job that reads every user again).

    Only a writing key other than the one that submitted the job may approve it (`403` for that one);
    `409` when the job does not wait for approval (still planning, decided already, or never needed it).
    """
    by = await run_in_threadpool(decider, job_id, request, context, who)
    approvals = context.approvals()
    await run_in_threadpool(context.check_broker)  # before anything is written
    with context.lanes.submissions_per_key.hold(who.name):  # it stages the whole input again
        try:
            submitted = await context.lanes.submission(approvals.approve, job_id, who.name)
        except DecisionRefused as exc:
            await run_in_threadpool(_refused, context, by.tenant, who.name, job_id, request, exc.why)
            raise ApiError(403, str(exc)) from None
        except NotAwaiting as exc:
            raise ApiError(409, str(exc)) from None
    await run_in_threadpool(_audit_approval, context, by, submitted)
    return accepted(JobAccepted.of(submitted).model_dump(mode="json"))


@router.post("/{job_id}/reject", responses=error_responses(401, 403, 404, 409, 422, 503))
def reject(job_id: JobId, request: Request, context: Context, who: Authenticated,
           body: Annotated[Rejection | None, Body()] = None) -> dict[str, Any]:
    """Reject a job that waits for approval: it ends `cancelled` with the reason, and its seats are released.

    The same keys may reject as may approve (`403` for the submitter's own: it may cancel the job instead).
    """
    by = decider(job_id, request, context, who)
    reason = (body.reason or "").strip() or None if body is not None else None
    try:
        decision = context.approvals().reject(job_id, who.name, reason)
    except DecisionRefused as exc:
        _refused(context, by.tenant, who.name, job_id, request, exc.why)
        raise ApiError(403, str(exc)) from None
    except NotAwaiting as exc:
        raise ApiError(409, str(exc)) from None
    audit_done(context, by.tenant, who.name, AuditAction.REJECTED, job_id, {"reason": decision.reason})
    return {"id": job_id, "status": JobStatus.CANCELLED.value, "decision": decision.decision.value, "by": who.name,
            "reason": decision.reason}


def _audit_approval(context: ApiContext, by: Decider, run: Submitted) -> None:
    """The approval on the job, and its run as submitted (by the approver), as `run` records a dry run's run."""
    run_id, rows, rollback_of = run.id, run.total, run.rollback_of
    audit_done(context, by.tenant, by.who.name, AuditAction.APPROVED, by.job_id,
               {"run_job": run_id, **run.audited_rows()})
    if rollback_of is None:
        audit_done(context, by.tenant, by.who.name, AuditAction.SUBMITTED, run_id,
                   {"planned_from": by.job_id, **run.audited_rows(), "dry_run": False, "approved": True,
                    **held_summary(run.held)})
    else:
        audit_done(context, by.tenant, by.who.name, AuditAction.ROLLBACK_REQUESTED, rollback_of,
               {"rollback_job": run_id, "users": rows, "dry_run": False, "planned_from": by.job_id})


def _refused(context: ApiContext, tenant: str, actor: str, job_id: str, request: Request, why: Refusal) -> None:
    """Record a refused decision with the tenant's refusals (collapsed per key and minute); an outage is logged."""
    try:
        context.audit.refused(tenant, actor, {"request": f"{request.method} {request.url.path}", "why": why.value},
                              action=AuditAction.APPROVAL_REFUSED, job=job_id)
    except OUTAGES:
        log.exception("refused %s of job %s by %s not recorded in the audit trail", request.url.path, job_id, actor)

