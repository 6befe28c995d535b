"""Dependency providers: the app's context, the authenticated caller, tenant-scoped jobs and uploads."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Annotated, Literal, NoReturn

from fastapi import Depends, Header, HTTPException, Path, Query, Request

from api.context import ApiContext
from api.errors import ApiError
from api.uploads import UploadKind, upload_kind
from config import ApiKey
from jobs.idempotency import VALID_KEY
from jobs.models import Assignment, FieldError, JobOptions, LicenseMode, SeatPolicy

log = logging.getLogger(__name__)

# Job ids are uuid4().hex: anything else is refused before it reaches a Redis key name.
JOB_ID_PATTERN = "^[0-9a-f]{32}$"
JOB_ID_HELP = "A job's id: 32 lower-case hex digits"
MAX_CALLBACK_URL_CHARS = 2048
READ_ONLY = ("this API key is read-only: it may list and read jobs, results, events, the audit trail and tenants,"
             " but not submit, run, cancel, resume or roll back jobs")
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


# The two dependencies every route has are async (no I/O in them): they never wait for the thread pool.
async def api_context(request: Request) -> ApiContext:
    """The app's collaborators."""
    context: ApiContext = request.app.state.context
    return context


Context = Annotated[ApiContext, Depends(api_context)]


async def caller(request: Request, context: Context) -> Caller:
    """The caller's API key, from `Authorization: Bearer`; 401 when missing or unknown, 429 after many failures."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "missing bearer API key", headers={"WWW-Authenticate": "Bearer"})
    address = request.client.host if request.client else "unknown"
    wait_s = context.key_attempts.wait_s(address)
    if wait_s:  # the key is not even looked at
        raise ApiError(429, f"too many failed API key attempts from this address; retry in {wait_s} s",
                       headers={"Retry-After": str(wait_s)})
    found: ApiKey | None = None
    given = token.strip().encode()
    for key in context.settings.api_keys:  # compare against every key, in constant time each
        if hmac.compare_digest(key.key.get_secret_value().encode(), given):
            found = key
    if found is None:
        _refuse_key(context, address, request)
    return Caller(found)


def _refuse_key(context: ApiContext, address: str, request: Request) -> NoReturn:
    """Count and log a failed attempt (never the key), then answer 401."""
    failure = context.key_attempts.failed(address)
    log.warning("invalid API key from %s for %s %s", address, request.method, request.url.path)
    if failure.address_throttled:
        log.warning("failed API key attempts from %s throttled: %d in %.0f s", address,
                    context.key_attempts.per_address, context.key_attempts.window_s)
    if failure.all_throttled:
        log.warning("failed API key attempts from all addresses throttled: %d in %.0f s",
                    context.key_attempts.total, context.key_attempts.window_s)
    raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})


Authenticated = Annotated[Caller, Depends(caller)]


def writer(who: Authenticated) -> Caller:
    """The caller, if its key may change things; 403 for a read-only key."""
    if not who.key.may_write:
        raise ApiError(403, READ_ONLY)
    return who


# Routes that change anything list this in `dependencies=`: it runs before any other check of theirs.
WRITES = Depends(writer)
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description=JOB_ID_HELP)]


def visible_job(job_id: JobId, context: Context, who: Authenticated) -> VisibleJob:
    """The job in the path; 404 when it does not exist or belongs to a tenant the key may not use."""
    tenant = context.store.job_tenant(job_id)
    if tenant is None or not who.allows(tenant):
        raise HTTPException(404, f"job {job_id} not found")
    return VisibleJob(job_id, tenant)


ScopedJob = Annotated[VisibleJob, Depends(visible_job)]


def permits(context: ApiContext, who: Caller, tenant: str, request: str) -> bool:
    """Whether the caller may act on a tenant; a refusal for a configured tenant is audited there (collapsed)."""
    if who.allows(tenant):
        return True
    if tenant in context.settings.tenants:  # not for made-up names: they would each get a stream
        context.audit.refused(tenant, who.name, {"request": request})
    return False


def tenant_refused(tenant: str, doing: str) -> ApiError:
    """The 403 for a tenant the key may not use, the same whether the profile exists or not."""
    return ApiError(403, f"this API key may not {doing} tenant '{tenant}'")


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
    # Allowed first: a key learns nothing of the profiles it may not use, not even whether they exist.
    if not permits(context, who, tenant, "POST /v1/jobs"):
        raise tenant_refused(tenant, "submit jobs for")
    if tenant not in context.settings.tenants:
        raise unknown_tenant(tenant)
    return tenant


def unknown_tenant(tenant: str) -> ApiError:
    """The 422 for a profile that does not exist (told only to keys that may use it if it did)."""
    return ApiError(422, f"unknown tenant profile '{tenant}'",
                    [FieldError(f"unknown tenant profile '{tenant}'", column="tenant", value=tenant)])


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
    assignment: Annotated[Assignment | None, Query(
        description="any (default): an add a group already gives the user is unchanged (noted held_via_group). "
                    "direct: assign it directly too (no further seat; the user keeps it on leaving the group).")]
    = None,
) -> JobOptions:
    """How a submitted job runs, from the query string (a JSON body or a form field may set the same)."""
    kept = tuple(c.strip() for c in (keep_columns or "").split(",") if c.strip())
    return JobOptions(dry_run=dry_run, seat_policy=on_seat_shortage, callback_url=callback_url or None,
                      mode=LicenseMode.parse(mode) if mode else None, keep_columns=kept, assignment=assignment)


SubmitOptions = Annotated[JobOptions, Depends(submit_options)]
# Checked by the schema (422), and so shown to clients in the OpenAPI document.
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", pattern=f"^{VALID_KEY.pattern}$",
    description="Makes retrying a submission safe: 1-200 printable ASCII characters, chosen by the client",
)]
