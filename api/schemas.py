"""Response shapes, as the OpenAPI document shows them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class JobAccepted(BaseModel):
    """Answer to a submission."""

    id: str
    status: str
    total: int
    warnings: list[str] = []
    dry_run: bool = False


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
