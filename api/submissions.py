"""A submission at the API: its options, the upload read and fingerprinted, the Idempotency-Key, the audit event.

The Idempotency-Key's handling (`once_per_key`) serves every route creating a job from a request (the scans' too).

With an `Idempotency-Key`, the first request claims the key (Redis SET NX, scoped by API key name)
and renews the claim while it runs; a concurrent request with the same key waits for the first one's
answer (up to a few seconds, then 409 "in progress") and a later one gets it again (200) if its body,
tenant and options are the same, 409 if not. A refused submission gives the key back. Waiting is
`await` between short Redis reads, never a thread, and only a few requests may wait on one key.

Each API key may have a few submissions in progress at once (429 past that), whose blocking steps
run in the submissions lane (api.lanes); the tenant's and the key's quotas are checked before the
body is read, and taken atomically when the job is committed (jobs.quotas).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from api.context import ApiContext
from api.deps import Caller, permits
from api.errors import OUTAGES, ApiError
from api.schemas import JobAccepted
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
from jobs.schedule import held_summary
from jobs.submit import Submitted

log = logging.getLogger(__name__)

IN_PROGRESS_RETRY_AFTER_S = 2
MAX_POLL_S = 0.5  # waits between looks at the first request's claim grow up to this


@dataclass(frozen=True)
class Receipt:
    """The answer to a submission (a JobAccepted body), and whether it repeats an earlier request's."""

    answer: dict[str, Any]
    replayed: bool = False


# A request creating a job: its answer (a JobAccepted body) and its fingerprint (what makes a retry the same request).
Create = Callable[[], Awaitable[tuple[dict[str, Any], str]]]


async def accept_submission(request: Request, context: ApiContext, who: Caller, tenant: str | None,
                            idempotency_key: str | None, options: JobOptions) -> Receipt:
    """Run the submission, or answer what the earlier request with the same idempotency key got."""
    return await once_per_key(context, who, idempotency_key, lambda: _submit(request, context, who, tenant, options),
                              lambda: _fingerprint_only(request, context, tenant))


async def once_per_key(context: ApiContext, who: Caller, idempotency_key: str | None, create: Create,
                       fingerprint: Callable[[], Awaitable[str]]) -> Receipt:
    """Create the job, under its idempotency key if given: run once, replayed after, refused when the key is reused.

    `fingerprint` is the request's, computed without creating anything (for a retry).
    """
    if idempotency_key is None:
        answer, _ = await create()
        return Receipt(answer)
    store = context.idempotency
    try:
        claim = await _claim(context, who.name, idempotency_key)
    except IdempotencyInProgress as exc:
        raise ApiError(409, str(exc), headers={"Retry-After": str(IN_PROGRESS_RETRY_AFTER_S)}) from None
    if not claim.owned:
        try:
            return Receipt(dict(store.replay(claim, await fingerprint())), True)
        except IdempotencyConflict as exc:
            raise ApiError(409, str(exc)) from None
    try:
        async with _kept_alive(store, claim):
            answer, fingerprinted = await create()
    except BaseException:
        await run_in_threadpool(_give_back, store, claim)
        raise
    await _after_commit(store.complete, claim, fingerprinted, answer)
    return Receipt(answer)


async def _claim(context: ApiContext, scope: str, key: str) -> Claim:
    """Claim the idempotency key, or the earlier request's answer; waits (awaiting) while that request runs."""
    store = context.idempotency
    claim = await run_in_threadpool(store.try_claim, scope, key)
    if claim is not None:
        return claim
    loop = asyncio.get_running_loop()
    deadline = loop.time() + store.wait_s
    delay = store.poll_s
    waiters, record = context.lanes.idempotency_waiters, store.record_key(scope, key)
    if not waiters.full(record):  # else enough requests wait for this key already: this one is told at once
        with waiters.hold(record):
            while loop.time() < deadline:
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                delay = min(delay * 2, MAX_POLL_S)
                claim = await run_in_threadpool(store.try_claim, scope, key)
                if claim is not None:
                    return claim
    raise IdempotencyInProgress("a request with this idempotency key is still being processed")


async def _submit(request: Request, context: ApiContext, who: Caller, tenant: str | None,
                  options: JobOptions) -> tuple[dict[str, Any], str]:
    """Validate, commit and enqueue the upload (one of the key's few at once); the answer and the fingerprint."""
    with context.lanes.submissions_per_key.hold(who.name):
        if tenant is not None:  # before the body is read; a JSON body's tenant is checked at commit only
            await run_in_threadpool(context.quotas.check, tenant, who.name)
        return await _read_and_submit(request, context, who, tenant, options)


async def _read_and_submit(request: Request, context: ApiContext, who: Caller, tenant: str | None,
                           options: JobOptions) -> tuple[dict[str, Any], str]:
    submitter, lane = context.submitter, context.lanes.submission
    await lane(context.check_broker)  # before anything is written
    if tenant is None:  # a JSON body names its own tenant, checked against the key while parsing
        upload = await read_json(request, context.settings.max_json_bytes, context.pace)
        accepted = await lane(submitter.submit_json, upload.body, owner=who.name,
                              allowed=lambda name: permits(context, who, name, "POST /v1/jobs"), options=options)
        sha256, filename, form_url = upload.sha256, upload.filename, None
    else:
        async with csv_upload(request, context.settings.max_upload_bytes, context.pace) as csv:
            options = _with_form_callback(options, csv.callback_url)
            accepted = await lane(submitter.submit_csv, tenant, csv.chunks, owner=who.name, options=options)
            sha256, filename = await lane(csv.chunks.hexdigest), csv.filename
            form_url = csv.callback_url
    details = {"file": filename, "sha256": sha256, "rows": accepted.total, "dry_run": accepted.dry_run,
               "on_seat_shortage": options.seat_policy.value, "mode": accepted.mode.value,
               "assignment": accepted.assignment.value,
               **({"needs_approval": True} if accepted.needs_approval else {}), **held_summary(accepted.held)}
    await _after_commit(_audit_submitted, context, who, tenant, accepted.id, details)
    return _answer(accepted), _fingerprint(request, _with_form_fields(sha256, form_url))


async def _fingerprint_only(request: Request, context: ApiContext, tenant: str | None) -> str:
    """The request's fingerprint, reading its body without submitting it."""
    if tenant is None:
        sha256 = (await read_json(request, context.settings.max_json_bytes, context.pace)).sha256
    else:
        async with csv_upload(request, context.settings.max_upload_bytes, context.pace) as csv:
            sha256 = _with_form_fields(await context.lanes.submission(csv.chunks.hexdigest), csv.callback_url)
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


def _answer(submitted: Submitted) -> dict[str, Any]:
    """The 202 body."""
    return JobAccepted.of(submitted).model_dump(mode="json")


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
