"""Jobs built from a scan of the tenant: reclaiming unused licenses, removing direct assignments groups cover."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.context import ApiContext
from api.deps import (
    MAX_CALLBACK_URL_CHARS,
    WRITES,
    Authenticated,
    Caller,
    Context,
    IdempotencyKey,
    permits,
    tenant_refused,
    unknown_tenant,
)
from api.errors import OUTAGES, ApiError
from api.schemas import JobAccepted, accepted, error_responses
from api.submissions import once_per_key
from jobs.audit import AuditAction
from jobs.idempotency import request_fingerprint
from jobs.models import FieldError
from jobs.reclaim import MAX_INACTIVE_DAYS, MAX_UPN_PATTERNS
from jobs.record import JobKind
from jobs.scan_jobs import ScanRequest, scan_request

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["scans"])
MAX_SKUS = 50


class ReclaimBody(BaseModel):
    """What to reclaim, as a JSON body (adds to the query's `sku`, `exclude_upn` and `exclude_group`)."""

    skus: list[str] = Field(default=[], max_length=MAX_SKUS, description="Part numbers, skuIds or product names.")
    exclude_group: str | None = Field(default=None, max_length=64, description="Object id of a group whose "
                                      "members (nested groups' too) keep their licenses.")
    exclude_upns: list[str] = Field(default=[], max_length=MAX_UPN_PATTERNS,
                                    description="UPN patterns to leave alone, `*` and `?` wildcards, any case.")


TenantName = Annotated[str, Query(max_length=128, description="The tenant profile to scan.")]
DryRun = Annotated[bool, Query(description="Plan only (the default): list the users and seats, write nothing.")]
Skus = Annotated[list[str] | None, Query(max_length=MAX_SKUS, description="Only these SKUs (repeat; default: all).")]
CallbackUrl = Annotated[str | None, Query(max_length=MAX_CALLBACK_URL_CHARS, description="https:// URL to POST the "
                                          "job to (signed) when it ends, pauses or waits; default: the tenant's.")]
REPLAYED: dict[int | str, dict[str, Any]] = {200: {"model": JobAccepted,
                                                   "description": "The job an earlier request with the same "
                                                                  "Idempotency-Key created"}}


@router.post("/reclaim", status_code=202, response_model=JobAccepted, dependencies=[WRITES],
             responses={**REPLAYED, **error_responses(401, 403, 409, 422, 429, 503)})
async def reclaim(
    context: Context, who: Authenticated, tenant: TenantName,
    inactive_days: Annotated[int, Query(description=f"Days without a successful sign-in (1-{MAX_INACTIVE_DAYS}).")]
    = 90,
    dry_run: DryRun = True,
    sku: Skus = None,
    exclude_group: Annotated[str | None, Query(max_length=64)] = None,
    exclude_upn: Annotated[list[str] | None, Query(max_length=MAX_UPN_PATTERNS)] = None,
    body: Annotated[ReclaimBody | None, Body()] = None,
    callback_url: CallbackUrl = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Remove the direct licenses of disabled users and of users who have not signed in for `inactive_days`.

    A worker scans the tenant (the job is `planning` meanwhile) and the job removes what it found:
    an ordinary job, so a dry run (the default) can be run, and a run rolled back. Users created
    within the days, members of `exclude_group` and UPNs matching `exclude_upn` are left alone;
    licenses held through groups are never touched. `Idempotency-Key` and `callback_url` as for `POST /v1/jobs`.
    """
    extra = body or ReclaimBody()
    if exclude_group and extra.exclude_group and exclude_group.lower() != extra.exclude_group.lower():
        raise ApiError(422, "exclude_group is given twice (query and body), differently",
                       [FieldError("given twice, differently", column="exclude_group", value=extra.exclude_group)])
    asked = Asked(tenant, dry_run, callback_url or None, idempotency_key)
    return await _submit_scan(context, who, asked, "POST /v1/reclaim", JobKind.RECLAIM,
                              skus=[*(sku or ()), *extra.skus], inactive_days=inactive_days,
                              exclude_group=exclude_group or extra.exclude_group,
                              exclude_upns=[*(exclude_upn or ()), *extra.exclude_upns])


@router.post("/cleanup/redundant-direct", status_code=202, response_model=JobAccepted, dependencies=[WRITES],
             responses={**REPLAYED, **error_responses(401, 403, 409, 422, 429, 503)})
async def cleanup_redundant_direct(context: Context, who: Authenticated, tenant: TenantName, dry_run: DryRun = True,
                                   sku: Skus = None, callback_url: CallbackUrl = None,
                                   idempotency_key: IdempotencyKey = None) -> Response:
    """Remove direct assignments a group already gives the user (same SKU, same disabled plans): seats unchanged.

    Microsoft's cleanup after moving users to group-based licensing. A worker scans the tenant and
    the job removes what it found; a dry run (the default) can be run, and a run rolled back.
    `Idempotency-Key` and `callback_url` as for `POST /v1/jobs`.
    """
    asked = Asked(tenant, dry_run, callback_url or None, idempotency_key)
    return await _submit_scan(context, who, asked, "POST /v1/cleanup/redundant-direct", JobKind.REDUNDANT_DIRECT,
                              skus=sku or [])


@dataclass(frozen=True)
class Asked:
    """What every scan request says besides its criteria."""

    tenant: str
    dry_run: bool
    callback_url: str | None
    idempotency_key: str | None


async def _submit_scan(context: ApiContext, who: Caller, asked: Asked, route: str, kind: JobKind,
                       **criteria: Any) -> Response:
    """Check the tenant and what was asked, then create the scan job (once per idempotency key) and audit it."""
    tenant = asked.tenant
    if not permits(context, who, tenant, route):
        raise tenant_refused(tenant, "submit jobs for")
    if tenant not in context.settings.tenants:
        raise unknown_tenant(tenant)
    # A retry is the same request when its route, tenant, options and criteria are (the body's JSON included).
    described = json.dumps({"route": route, "criteria": criteria}, sort_keys=True, separators=(",", ":"))
    fingerprint = request_fingerprint(hashlib.sha256(described.encode()).hexdigest(),
                                      {"tenant": tenant, "dry_run": str(asked.dry_run),
                                       "callback_url": asked.callback_url or ""})

    async def create() -> tuple[dict[str, Any], str]:
        with context.lanes.submissions_per_key.hold(who.name):
            await run_in_threadpool(context.quotas.check, tenant, who.name)
            await context.lanes.submission(context.check_broker)  # before anything is written
            catalog = await context.lanes.submission(context.catalogs.get, tenant)
            request = scan_request(kind, catalog, chunk_size=context.settings.chunk_size, as_of=time.time(),
                                   **criteria)
            submitted = await context.lanes.submission(context.submitter.submit_scan, tenant, request,
                                                       owner=who.name, dry_run=asked.dry_run,
                                                       callback_url=asked.callback_url)
        await run_in_threadpool(_audit, context, tenant, who.name, submitted.id, request, asked)
        return JobAccepted.of(submitted).model_dump(mode="json"), fingerprint

    async def same() -> str:
        return fingerprint

    receipt = await once_per_key(context, who, asked.idempotency_key, create, same)
    return accepted(receipt.answer, 200 if receipt.replayed else 202)


def _audit(context: ApiContext, tenant: str, actor: str, job_id: str, request: ScanRequest, asked: Asked) -> None:
    """Record the request with what it asked (a store outage is logged: the job stands)."""
    details = {**request.to_json(), "dry_run": asked.dry_run}
    details.pop("chunk_size", None)
    try:
        context.audit.append(tenant, actor, AuditAction.SUBMITTED, job=job_id, details=details)
    except OUTAGES:
        log.exception("%s job %s accepted, but not recorded in the audit trail", request.kind.value, job_id)
