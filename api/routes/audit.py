"""The audit trail: who submitted, cancelled or was refused what, as JSON lines, oldest first."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.context import ApiContext
from api.deps import (
    JOB_ID_HELP,
    JOB_ID_PATTERN,
    Authenticated,
    Caller,
    Context,
    permits,
    tenant_refused,
    unknown_tenant,
)
from api.errors import ApiError
from api.schemas import AuditEventOut, error_responses
from jobs.audit import AuditEvent, parse_instant
from jobs.models import FieldError

router = APIRouter(prefix="/v1/audit", tags=["audit"])

NDJSON = "application/x-ndjson"
INSTANT_HELP = "ISO-8601 (UTC unless an offset is given) or epoch seconds; inclusive"


@router.get("", response_class=StreamingResponse, responses={
    200: {"content": {NDJSON: {"schema": AuditEventOut.model_json_schema()}},
          "description": "One event per line, oldest first"},
    **error_responses(401, 403, 422, 503)})
def audit_events(
    context: Context, who: Authenticated,
    tenant: Annotated[str | None, Query(max_length=128, description="Only this tenant profile")] = None,
    since: Annotated[str | None, Query(max_length=64, description=INSTANT_HELP)] = None,
    until: Annotated[str | None, Query(max_length=64, description=INSTANT_HELP)] = None,
    job: Annotated[str | None, Query(pattern=JOB_ID_PATTERN, description=f"Only this job's events ({JOB_ID_HELP})")]
    = None,
) -> StreamingResponse:
    """Audit events of the tenants this key may see (or of `tenant`: 403 when the key may not)."""
    tenants = _readable_tenants(context, who, tenant)
    events = context.audit.events(tenants, since=_instant("since", since), until=_instant("until", until), job=job)
    first = next(events, None)  # read before answering, so that an outage is a 503 and not a cut stream
    return StreamingResponse(_lines(first, events), media_type=NDJSON)


def _readable_tenants(context: ApiContext, who: Caller, tenant: str | None) -> list[str]:
    """The tenant asked for (403 if the key may not see it), or every configured tenant the key may see."""
    if tenant is None:
        return [name for name in context.settings.tenants if who.allows(name)]
    if not permits(context, who, tenant, "GET /v1/audit"):
        raise tenant_refused(tenant, "read the audit trail of")
    if tenant not in context.settings.tenants:
        raise unknown_tenant(tenant)
    return [tenant]


def _instant(name: str, value: str | None) -> float | None:
    """A `since`/`until` parameter as epoch seconds (422 when it is neither form)."""
    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise ApiError(422, f"{name}: {exc}", [FieldError(str(exc), column=name, value=value)]) from None


def _lines(first: AuditEvent | None, rest: Iterator[AuditEvent]) -> Iterator[bytes]:
    """One JSON object per line."""
    if first is None:
        return
    yield json.dumps(first.to_json(), separators=(",", ":")).encode() + b"\n"
    for event in rest:
        yield json.dumps(event.to_json(), separators=(",", ":")).encode() + b"\n"
