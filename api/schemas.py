"""Response shapes, as the OpenAPI document shows them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


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
    """Answer to a submission."""

    id: str
    status: str
    total: int
    warnings: list[str] = []
    dry_run: bool = False
    mode: str = "add"
    input: InputRead | None = None


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
