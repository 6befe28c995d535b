"""Response shapes, as the OpenAPI document shows them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from jobs.models import Assignment, JobStatus, LicenseMode, PauseReason
from jobs.record import JobKind
from jobs.submit import Submitted


class ColumnRead(BaseModel):
    """What one column of an upload was read as (`AccountSkuId` → `add`)."""

    column: str
    read_as: str


class InputRead(BaseModel):
    """How an upload was read: format, mode, encoding, layout, each column, and lines skipped."""

    format: str
    mode: str
    encoding: str | None = None
    delimiter: str | None = None
    layout: str | None = None
    columns: list[ColumnRead] = []
    notes: list[str] = []


class JobAccepted(BaseModel):
    """Answer to a submission (and to run and rollback, which create a job): the job, queued or scheduled."""

    id: str
    status: JobStatus
    total: int
    warnings: list[str] = []
    dry_run: bool = False
    mode: str = "add"
    assignment: Assignment = Assignment.ANY
    input: InputRead | None = None
    needs_approval: bool = Field(default=False, description="It plans, then waits for another API key's approval.")
    counted_by_scan: bool = Field(default=False, description="A job built from a scan of the tenant: its rows are "
                                  "what the scan finds, so `total` is 0 here; GET /v1/jobs/{id} counts them once "
                                  "`scan.outcome` is set.")

    @classmethod
    def of(cls, submitted: Submitted) -> JobAccepted:
        """The answer for a job just accepted."""
        return cls(id=submitted.id, status=submitted.status, total=submitted.total,
                   warnings=list(submitted.warnings), dry_run=submitted.dry_run, mode=submitted.mode.value,
                   assignment=submitted.assignment,
                   input=InputRead.model_validate(submitted.reading) if submitted.reading else None,
                   needs_approval=submitted.needs_approval, counted_by_scan=submitted.counted_by_scan)


def accepted(answer: Mapping[str, Any], status_code: int = 202) -> JSONResponse:
    """The answer naming a created job (a JobAccepted body), with its `Location`."""
    return JSONResponse(status_code=status_code, content=dict(answer), headers={"Location": f"/v1/jobs/{answer['id']}"})


class SeatOut(BaseModel):
    """One SKU of a plan's seat table."""

    sku_id: str
    sku: str = Field(description="The skuPartNumber (the id when the tenant no longer has the SKU).")
    needed: int
    released: int
    free: int = Field(description="Graph's free seats minus what the tenant's other jobs hold.")
    shortfall: int


class PlanOut(BaseModel):
    """What the job's plan found so far (every job reads and plans each user before writing)."""

    changes: int
    unchanged: int
    planned: int
    predicted_failures: dict[str, int] = Field(description="Reason → users the plan expects to fail.")
    warnings: dict[str, int]
    notes: dict[str, int] = Field(default_factory=dict, description="Note → users (`held_via_group`: an add a "
                                  "group already gives, not assigned directly).")
    seats: list[SeatOut] | None = Field(description="Null when Graph cannot be asked right now.")


class ApprovalOut(BaseModel):
    """A job that waits for approval once planned: who submitted it, and the decision once taken."""

    required: bool
    submitted_by: str = Field(description="The name of the API key that submitted the job (it may not approve it).")
    decision: str | None = Field(description="approved, rejected or withdrawn (cancelled while waiting); null before.")
    by: str | None
    at: str | None
    reason: str | None
class DayOut(BaseModel):
    """The rows of a job due at one instant (`at` null: at submission), and their chunks."""

    at: str | None
    rows: int
    chunks: list[int]


class DaySeatOut(BaseModel):
    """One SKU on one day: seats the day's rows add and free, seats free before them, and what is short."""

    at: str | None
    sku_id: str
    sku: str
    adds: int
    releases: int
    free: int
    shortfall: int


class JobOut(BaseModel):
    """A job's progress (`GET /v1/jobs/{id}`, and each event of `GET /v1/jobs/{id}/events`).

    `would_change` and `would_fail` are there for dry runs only; the links to related jobs
    (`planned_from`, `run_as`, `rollback_of`, `rolled_back_by`) only when there is one.
    """

    id: str
    tenant: str
    kind: JobKind
    dry_run: bool
    status: JobStatus
    total: int
    succeeded: int
    failed: int
    cancelled: int
    unchanged: int
    pending: int
    waiting_for_replication: int
    throttled: int
    retries: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    rate_per_s: float
    eta_s: float | None
    source: str
    warnings: list[str]
    plan: PlanOut | None
    paused_reason: PauseReason | None
    paused_message: str | None
    paused_at: str | None
    next_probe_at: str | None
    mode: LicenseMode = Field(description="What the input's licenses mean: `add` (and remove), or `exact`.")
    assignment: Assignment = Field(default=Assignment.ANY, description="How added licenses must be held: `any` "
                                   "(a group's counts) or `direct`.")
    input: InputRead | None = Field(description="How the upload was read; null for a job without one.")
    would_change: int | None = None
    would_fail: int | None = None
    planned_from: str | None = None
    run_as: str | None = None
    rollback_of: str | None = None
    rolled_back_by: str | None = None
    awaiting_approval: bool = Field(default=False, description="Planned, and waits for another key's approval.")
    approval: ApprovalOut | None = None
    scan: dict[str, Any] | None = Field(default=None, description="A job built from a scan of the tenant (reclaim, "
                                        "redundant_direct): what it looks for, whether the scan ended, what it found.")
    # Effective dates (jobs.schedule): only for a job with rows dated ahead.
    schedule: list[DayOut] | None = Field(default=None, description="The job's rows per day they are due.")
    scheduled: int | None = Field(default=None, description="Rows still waiting for their day.")
    seats_by_day: list[DaySeatOut] | None = Field(
        default=None, description="The seat table by date (days still ahead; all of a dry run's); null when Graph"
                                  " cannot be asked right now.")


class ErrorItem(BaseModel):
    """One reason an input was refused."""

    row: int | None
    column: str | None
    value: str | None
    message: str


class ErrorBody(BaseModel):
    """A refused request."""

    detail: str
    errors: list[ErrorItem] = []
    total_errors: int = 0


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry documenting refusals with the error body."""
    return {code: {"model": ErrorBody} for code in status_codes}


class AuditEventOut(BaseModel):
    """One audit event (a line of `GET /v1/audit`)."""

    id: str
    time: str
    tenant: str
    actor: str
    action: str
    job: str | None
    details: dict[str, Any]
