"""A submission at the API: its options, the upload read and fingerprinted, the Idempotency-Key, the audit event.

With an `Idempotency-Key`, the first request claims the key (Redis SET NX, scoped by API key name)
and renews the claim while it runs; a concurrent request with the same key waits for the first one's
answer (up to a few seconds, then 409 "in progress") and a later one gets it again (200) if its body,
tenant and options are the same, 409 if not. A refused submission gives the key back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.context import ApiContext
from api.deps import Caller, permits
from api.errors import OUTAGES, ApiError
from api.schemas import InputRead, JobAccepted
from api.uploads import csv_upload, read_json
from jobs.audit import AuditAction
from jobs.idempotency import (
    Claim,
    IdempotencyConflict,
    IdempotencyInProgress,
    IdempotencyStore,
    request_fingerprint,
)
from jobs.models import FieldError, JobOptions
from jobs.submit import Submitted

log = logging.getLogger(__name__)

IN_PROGRESS_RETRY_AFTER_S = 2


@dataclass(frozen=True)
class Receipt:
    """The answer to a submission (a JobAccepted body), and whether it repeats an earlier request's."""

    answer: dict[str, Any]
    replayed: bool = False


async def accept_submission(request: Request, context: ApiContext, who: Caller, tenant: str | None,
                            idempotency_key: str | None, options: JobOptions) -> Receipt:
    """Run the submission, or answer what the earlier request with the same idempotency key got."""
    if idempotency_key is None:
        answer, _ = await _submit(request, context, who, tenant, options)
        return Receipt(answer)
    store = context.idempotency
    try:
        claim = await run_in_threadpool(store.claim, who.name, idempotency_key)
    except IdempotencyInProgress as exc:
        raise ApiError(409, str(exc), headers={"Retry-After": str(IN_PROGRESS_RETRY_AFTER_S)}) from None
    if not claim.owned:
        try:
            return Receipt(dict(store.replay(claim, await _fingerprint_only(request, context, tenant))), True)
        except IdempotencyConflict as exc:
            raise ApiError(409, str(exc)) from None
    try:
        async with _kept_alive(store, claim):
            answer, fingerprint = await _submit(request, context, who, tenant, options)
    except BaseException:
        await run_in_threadpool(_give_back, store, claim)
        raise
    await _after_commit(store.complete, claim, fingerprint, answer)
    return Receipt(answer)


async def _submit(request: Request, context: ApiContext, who: Caller, tenant: str | None,
                  options: JobOptions) -> tuple[dict[str, Any], str]:
    """Validate, commit and enqueue the upload; returns the answer and the request's fingerprint."""
    submitter = context.submitter
    await run_in_threadpool(context.check_broker)  # before anything is written
    if tenant is None:  # a JSON body names its own tenant, checked against the key while parsing
        upload = await read_json(request, context.settings.max_json_bytes)
        accepted = await run_in_threadpool(submitter.submit_json, upload.body, owner=who.name,
                                           allowed=lambda name: permits(context, who, name, "POST /v1/jobs"),
                                           options=options)
        sha256, filename, form_url = upload.sha256, upload.filename, None
    else:
        async with csv_upload(request, context.settings.max_upload_bytes) as csv:
            options = _with_form_callback(options, csv.callback_url)
            accepted = await run_in_threadpool(submitter.submit_csv, tenant, csv.chunks, owner=who.name,
                                               options=options)
            sha256, filename = await run_in_threadpool(csv.chunks.hexdigest), csv.filename
            form_url = csv.callback_url
    details = {"file": filename, "sha256": sha256, "rows": accepted.total, "dry_run": accepted.dry_run,
               "on_seat_shortage": options.seat_policy.value, "mode": accepted.mode.value}
    await _after_commit(_audit_submitted, context, who, tenant, accepted.id, details)
    return _answer(accepted), _fingerprint(request, _with_form_fields(sha256, form_url))


async def _fingerprint_only(request: Request, context: ApiContext, tenant: str | None) -> str:
    """The request's fingerprint, reading its body without submitting it."""
    if tenant is None:
        sha256 = (await read_json(request, context.settings.max_json_bytes)).sha256
    else:
        async with csv_upload(request, context.settings.max_upload_bytes) as csv:
            sha256 = _with_form_fields(await run_in_threadpool(csv.chunks.hexdigest), csv.callback_url)
    return _fingerprint(request, sha256)


def _with_form_callback(options: JobOptions, form_url: str | None) -> JobOptions:
    """The options with a multipart form's `callback_url` (the query's, if both are given alike)."""
    if form_url is None or form_url == options.callback_url:
        return options
    if options.callback_url is not None:
        raise ApiError(422, "callback_url is given twice (query and form), differently",
                       [FieldError("given twice, differently", column="callback_url", value=form_url[:200])])
    return replace(options, callback_url=form_url)


def _with_form_fields(sha256: str, form_url: str | None) -> str:
    """The upload's digest, bound to the form's `callback_url` too (so a different one is a different request)."""
    if form_url is None:
        return sha256
    return hashlib.sha256(f"{sha256}\n{form_url}".encode()).hexdigest()


def _fingerprint(request: Request, sha256: str) -> str:
    """The body's SHA-256 with the query parameters (tenant, options)."""
    return request_fingerprint(sha256, dict(request.query_params))


def _audit_submitted(context: ApiContext, who: Caller, tenant: str | None, job_id: str,
                     details: dict[str, Any]) -> None:
    """Record the submission in its tenant's audit trail (a JSON body's tenant is read from the job)."""
    tenant = tenant or context.store.job_tenant(job_id)
    if tenant is not None:
        context.audit.append(tenant, who.name, AuditAction.SUBMITTED, job=job_id, details=details)


def _answer(accepted: Submitted) -> dict[str, Any]:
    """The 202 body."""
    return JobAccepted(id=accepted.id, status="queued", total=accepted.total, warnings=list(accepted.warnings),
                       dry_run=accepted.dry_run, mode=accepted.mode.value,
                       input=InputRead.model_validate(accepted.reading) if accepted.reading else None
                       ).model_dump(exclude_none=False)


@asynccontextmanager
async def _kept_alive(store: IdempotencyStore, claim: Claim) -> AsyncIterator[None]:
    """Renew the claim while the submission runs, so that it lapses soon after its holder dies."""
    async def renew() -> None:
        while True:
            await asyncio.sleep(store.keep_alive_s)
            with contextlib.suppress(*OUTAGES):  # the submission itself will meet the outage
                await run_in_threadpool(store.keep, claim)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _give_back(store: IdempotencyStore, claim: Claim) -> None:
    """Release a refused submission's idempotency key; if Redis is away, its claim expires by itself."""
    try:
        store.release(claim)
    except OUTAGES as exc:
        log.warning("idempotency key not given back (%s); it is usable again once its claim expires", exc)


async def _after_commit(record: Callable[..., None], *args: Any) -> None:
    """Bookkeeping after the job was committed: a failure is logged, the job stays accepted."""
    try:
        await run_in_threadpool(record, *args)
    except OUTAGES:
        log.exception("job accepted, but %s failed", getattr(record, "__qualname__", "its bookkeeping"))
