"""Dependency providers: the app's context, the authenticated caller, tenant-scoped jobs and uploads."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Header, HTTPException, Query, Request

from api.context import ApiContext
from api.errors import ApiError
from api.uploads import UploadKind, upload_kind
from config import ApiKey
from jobs.audit import AuditAction
from jobs.idempotency import VALID_KEY
from jobs.models import FieldError, JobOptions, LicenseMode, SeatPolicy

MAX_JOB_ID_CHARS = 64
MAX_CALLBACK_URL_CHARS = 2048
MAX_KEEP_COLUMNS_CHARS = 4096


@dataclass(frozen=True)
class Caller:
    """The authenticated API key: its name (in job records and audit events) and its scope."""

    key: ApiKey

    @property
    def name(self) -> str:
        """The key's name; never the key."""
        return self.key.name

    def allows(self, tenant: str) -> bool:
        """Whether this caller may act on a tenant profile."""
        return self.key.allows(tenant)


@dataclass(frozen=True)
class VisibleJob:
    """A job the caller may see: its id and tenant profile."""

    id: str
    tenant: str


def api_context(request: Request) -> ApiContext:
    """The app's collaborators."""
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(api_context)]


def caller(request: Request, context: Context) -> Caller:
    """The caller's API key, from `Authorization: Bearer`; 401 when missing or unknown."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer API key", headers={"WWW-Authenticate": "Bearer"})
    found: ApiKey | None = None
    given = token.strip().encode()
    for key in context.settings.api_keys:  # compare against every key, in constant time each
        if hmac.compare_digest(key.key.get_secret_value().encode(), given):
            found = key
    if found is None:
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
    return Caller(found)


Authenticated = Annotated[Caller, Depends(caller)]


def visible_job(job_id: str, context: Context, who: Authenticated) -> VisibleJob:
    """The job in the path; 404 when it does not exist or belongs to a tenant the key may not use."""
    tenant = context.store.job_tenant(job_id) if len(job_id) <= MAX_JOB_ID_CHARS else None
    if tenant is None or not who.allows(tenant):
        raise HTTPException(404, f"job {job_id[:MAX_JOB_ID_CHARS]} not found")
    return VisibleJob(job_id, tenant)


ScopedJob = Annotated[VisibleJob, Depends(visible_job)]


def permits(context: ApiContext, who: Caller, tenant: str, request: str) -> bool:
    """Whether the caller may act on a tenant; a refusal for a configured tenant is audited there."""
    if who.allows(tenant):
        return True
    if tenant in context.settings.tenants:  # not for made-up names: they would each get a stream
        context.audit.append(tenant, who.name, AuditAction.KEY_REFUSED, details={"request": request})
    return False


def csv_tenant(
    request: Request, context: Context, who: Authenticated,
    tenant: Annotated[str | None, Query(max_length=128)] = None,
) -> str | None:
    """A CSV upload's `?tenant=` profile, checked (422, 403); None for JSON, which names its own (415 for neither)."""
    # The body's format decides whether `?tenant=` is needed, so the Content-Type is checked here.
    if upload_kind(request) is UploadKind.JSON:
        return None
    if not tenant:
        raise ApiError(422, "a CSV submission needs ?tenant=<profile>",
                       [FieldError("required for CSV uploads", column="tenant")])
    if tenant not in context.settings.tenants:
        raise ApiError(422, f"unknown tenant profile '{tenant}'",
                       [FieldError(f"unknown tenant profile '{tenant}'", column="tenant", value=tenant)])
    if not permits(context, who, tenant, "POST /v1/jobs"):
        raise ApiError(403, f"this API key may not submit jobs for tenant '{tenant}'")
    return tenant


CsvTenant = Annotated[str | None, Depends(csv_tenant)]


def submit_options(
    dry_run: Annotated[bool, Query(description="Plan only: read every user and report, write nothing.")] = False,
    on_seat_shortage: Annotated[SeatPolicy, Query(description="fail: refuse with 409; wait: pause until seats appear.")]
    = SeatPolicy.FAIL,
    callback_url: Annotated[str | None, Query(
        max_length=MAX_CALLBACK_URL_CHARS,
        description="https:// URL to POST the job to (signed) when it ends or pauses; default: the tenant's.")] = None,
    mode: Annotated[Literal["add", "exact", "sync"] | None, Query(
        description="add (default): add and remove what the input says. exact (alias sync): each user ends up "
                    "holding exactly the listed licenses; the others held directly are removed. Required for a file "
                    "that lists what users hold (an admin center export).")] = None,
    keep_columns: Annotated[str | None, Query(
        max_length=MAX_KEEP_COLUMNS_CHARS,
        description="Comma-separated columns to keep unread although their values name licenses.")] = None,
) -> JobOptions:
    """How a submitted job runs, from the query string (a JSON body or a form field may set the same)."""
    kept = tuple(c.strip() for c in (keep_columns or "").split(",") if c.strip())
    return JobOptions(dry_run=dry_run, seat_policy=on_seat_shortage, callback_url=callback_url or None,
                      mode=LicenseMode.parse(mode) if mode else None, keep_columns=kept)


SubmitOptions = Annotated[JobOptions, Depends(submit_options)]
# Checked by the schema (422), and so shown to clients in the OpenAPI document.
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=f"^{VALID_KEY.pattern}$",
    description="Makes retrying a submission safe: 1-200 printable ASCII characters, chosen by the client",
)]
