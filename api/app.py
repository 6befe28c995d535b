"""The HTTP API (FastAPI): submit jobs, watch progress, fetch results, cancel."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import redis
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from config import ApiKey, Settings
from graphclient.retry import RetryPolicy
from graphclient.tenant import TenantClient, build_tenant_client
from jobs.models import FORMULA_START, SOURCE_COLUMNS, FieldError, InputRejected, Operation, UserResult
from jobs.scheduler import Send
from jobs.store import JobStore
from jobs.submit import CatalogCache, CatalogUnavailable, Submitter
from worker.producer import ChunkProducer

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("row", "user", "status", "reason", "graph_code", "graph_message", "http_status",
                  "attempts", "updated_at", "detail")
CANCEL_WAIT_S = 30.0
READ_CHUNK_BYTES = 64 * 1024


class JobAccepted(BaseModel):
    """Answer to a submission."""

    id: str
    status: str
    total: int
    warnings: list[str] = []


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


@dataclass(frozen=True)
class Caller:
    """The authenticated API key's scope."""

    key: ApiKey
    label: str

    def allows(self, tenant: str) -> bool:
        """Whether this caller may act on a tenant profile."""
        return self.key.allows(tenant)


def _error(status: int, detail: str, errors: list[FieldError] | None = None, total: int = 0) -> JSONResponse:
    items = [e.to_json() for e in errors or [FieldError(detail)]]
    return JSONResponse(status_code=status, content={"detail": detail, "errors": items,
                                                     "total_errors": total or len(items)})


def _too_big(what: str, limit: int) -> str:
    size = f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit:,} bytes"
    return f"the {what} is larger than {size}, more than the limit of {size} per request; split it into several jobs"


def neutralise(cell: str) -> str:
    """Defuse a CSV cell a spreadsheet would run as a formula."""
    if cell and cell[0] in FORMULA_START:
        return "'" + cell
    return cell


def create_app(
    settings: Settings,
    *,
    redis_client: redis.Redis | None = None,
    send: Send | None = None,
    fetch_skus: Callable[[str], list[dict[str, Any]]] | None = None,
    ceiling_for: Callable[[str], float | None] | None = None,
) -> FastAPI:
    """Build the API; collaborators default to the real ones built from `settings`."""
    client = redis_client or redis.Redis.from_url(settings.redis_url, health_check_interval=30)
    store = JobStore(client, retention_s=settings.retention_s)
    tenant_clients: dict[str, TenantClient] = {}
    clients_lock = threading.Lock()

    def tenant_client(name: str) -> TenantClient:
        with clients_lock:  # sync routes run in a thread pool
            if name not in tenant_clients:
                tenant_clients[name] = build_tenant_client(settings, settings.tenant(name), client)
            return tenant_clients[name]

    if send is None:
        send = ChunkProducer.from_settings(settings).send

    if fetch_skus is None:
        # A submission waits for Graph at most a few seconds; beyond that the caller gets a 503.
        policy = replace(RetryPolicy.from_settings(settings), max_attempts=4, max_total_s=20.0,
                         max_inline_wait_s=10.0)

        def fetch_skus(tenant: str) -> list[dict[str, Any]]:
            return list(policy.call(tenant_client(tenant).graph.subscribed_skus))

    if ceiling_for is None:
        def ceiling_for(tenant: str) -> float | None:
            profile = settings.tenants.get(tenant)
            if profile is None or profile.write_rate_per_s is None:
                return None
            try:
                rate = tenant_client(tenant).throttle.snapshot().rate_per_s
            except Exception:  # progress must not fail because the throttle state is unreadable
                return profile.write_rate_per_s
            return None if rate is None else float(rate)

    catalogs = CatalogCache(fetch_skus, settings.sku_cache_ttl_s)
    submitter = Submitter(settings, store, catalogs, send)
    keys = settings.api_keys

    app = FastAPI(
        title="bulk-license",
        version="0.1.0",
        description="Bulk Microsoft 365 license assignment through Microsoft Graph, as resumable jobs.",
    )

    @app.exception_handler(InputRejected)
    async def _rejected(_: Request, exc: InputRejected) -> JSONResponse:
        return _error(exc.status_code, exc.summary(), exc.errors, exc.total_errors)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            FieldError(message=str(e.get("msg")), column=".".join(str(p) for p in e.get("loc", ())))
            for e in exc.errors()
        ]
        return _error(422, "invalid request", errors)

    @app.exception_handler(CatalogUnavailable)
    async def _no_catalog(_: Request, exc: CatalogUnavailable) -> JSONResponse:
        return _error(503, str(exc))

    def caller(request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "missing bearer API key", headers={"WWW-Authenticate": "Bearer"})
        found: ApiKey | None = None
        given = token.strip().encode()
        for key in keys:  # compare against every key, in constant time each
            if hmac.compare_digest(key.key.get_secret_value().encode(), given):
                found = key
        if found is None:
            raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
        digest = hashlib.sha256(found.key.get_secret_value().encode()).hexdigest()[:8]
        return Caller(found, label=f"key-{digest}")  # names the key in job records without revealing it

    # Declared as a default, not an Annotated alias: this module's annotations are strings, and a
    # local alias could not be resolved from them.
    caller_dep = Depends(caller)

    def visible_job(job_id: str, who: Caller) -> str:
        tenant = store.job_tenant(job_id) if len(job_id) <= 64 else None
        if tenant is None or not who.allows(tenant):
            raise HTTPException(404, f"job {job_id[:64]} not found")
        return tenant

    @app.get("/healthz", tags=["ops"])
    def healthz() -> JSONResponse:
        """Liveness: the API is up and Redis answers."""
        try:
            client.ping()
        except redis.RedisError as exc:
            return JSONResponse(status_code=503, content={"status": "unavailable", "redis": str(exc)})
        return JSONResponse(content={"status": "ok", "redis": "ok"})

    @app.post(
        "/v1/jobs",
        status_code=202,
        response_model=JobAccepted,
        responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 413: {"model": ErrorBody},
                   415: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
        tags=["jobs"],
        openapi_extra={
            "requestBody": {
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "multipart/form-data": {
                        "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
                    },
                    "application/json": {"schema": {"type": "object"}},
                },
                "required": True,
            }
        },
    )
    async def submit(
        request: Request, who: Caller = caller_dep, tenant: str | None = Query(default=None, max_length=128)
    ) -> Response:
        """Submit a job: a CSV (`text/csv` body or multipart field `file`, `?tenant=`) or JSON."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = request.headers.get("content-length")
        if ctype == "application/json":
            limit = settings.max_json_bytes
            if length and length.isdigit() and int(length) > limit:
                return _error(413, _too_big("JSON body", limit))
            body = bytearray()
            async for part in request.stream():
                body += part
                if len(body) > limit:
                    return _error(413, _too_big("JSON body", limit))
            accepted = await run_in_threadpool(
                submitter.submit_json, bytes(body), owner=who.label, allowed=who.allows
            )
        elif ctype in ("text/csv", "multipart/form-data", "text/plain", "application/csv"):
            if not tenant:
                return _error(422, "a CSV submission needs ?tenant=<profile>",
                              [FieldError("required for CSV uploads", column="tenant")])
            if tenant not in settings.tenants:
                return _error(422, f"unknown tenant profile '{tenant}'",
                              [FieldError(f"unknown tenant profile '{tenant}'", column="tenant", value=tenant)])
            if not who.allows(tenant):
                return _error(403, f"this API key may not submit jobs for tenant '{tenant}'")
            limit = settings.max_upload_bytes
            if length and length.isdigit() and int(length) > limit + 1024 * 1024:
                return _error(413, _too_big("upload", limit))
            spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
            try:
                if ctype == "multipart/form-data":
                    try:
                        form = await request.form(max_files=1, max_fields=10, max_part_size=limit)
                    except Exception as exc:  # malformed multipart bodies
                        return _error(400, f"malformed multipart body: {exc}")
                    upload = form.get("file")
                    if upload is None or isinstance(upload, str):
                        return _error(422, "multipart upload needs a file field named 'file'",
                                      [FieldError("missing", column="file")])
                    source = upload.file
                    source.seek(0)
                    chunks: Iterator[bytes] = iter(lambda: source.read(READ_CHUNK_BYTES), b"")
                    accepted = await run_in_threadpool(submitter.submit_csv, tenant, chunks, owner=who.label)
                else:
                    size = 0
                    async for part in request.stream():
                        size += len(part)
                        if size > limit:
                            return _error(413, _too_big("upload", limit))
                        spool.write(part)
                    spool.seek(0)
                    chunks = iter(lambda: spool.read(READ_CHUNK_BYTES), b"")
                    accepted = await run_in_threadpool(submitter.submit_csv, tenant, chunks, owner=who.label)
            finally:
                spool.close()
        else:
            return _error(415, "send text/csv, multipart/form-data (field 'file') or application/json"
                               f" (got '{ctype or 'none'}')")
        body_out = JobAccepted(id=accepted.id, status="queued", total=accepted.total, warnings=list(accepted.warnings))
        return JSONResponse(status_code=202, content=body_out.model_dump(),
                            headers={"Location": f"/v1/jobs/{accepted.id}"})

    @app.get("/v1/jobs", tags=["jobs"], responses={401: {"model": ErrorBody}})
    def list_jobs(who: Caller = caller_dep, limit: int = Query(default=50, ge=1, le=500)) -> dict[str, Any]:
        """Recent jobs visible to this API key, newest first."""
        out = []
        for job_id in store.recent_jobs(limit * 4):
            progress = store.progress(job_id)
            if progress is not None and who.allows(progress.tenant):
                out.append(progress.to_json())
            if len(out) >= limit:
                break
        return {"value": out}

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}})
    def get_job(job_id: str, who: Caller = caller_dep) -> dict[str, Any]:
        """A job's progress: counters, status, current rate and ETA."""
        tenant = visible_job(job_id, who)
        progress = store.progress(job_id, ceiling_rate_per_s=ceiling_for(tenant))
        if progress is None:
            raise HTTPException(404, f"job {job_id} not found")
        return progress.to_json()

    @app.get("/v1/jobs/{job_id}/results", tags=["jobs"],
             responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}})
    def results(
        job_id: str,
        who: Caller = caller_dep,
        status: str | None = Query(default=None, pattern="^(succeeded|failed|cancelled|pending)$"),
        format: str = Query(default="json", pattern="^(json|csv)$"),
    ) -> Response:
        """One row per user; `?status=failed&format=csv` gives a file that can be fixed and resubmitted."""
        visible_job(job_id, who)
        rows = _result_rows(store, job_id, status)
        if format == "csv":
            return StreamingResponse(
                _csv_lines(rows),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{job_id}-results.csv"'},
            )
        return StreamingResponse(_json_lines(rows), media_type="application/json")

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], status_code=202,
              responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}})
    async def cancel(job_id: str, who: Caller = caller_dep) -> dict[str, Any]:
        """Cancel a job: returns once no write for it can still go out."""
        visible_job(job_id, who)
        store.request_cancel(job_id)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while store.writes_in_flight(job_id) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        in_flight = store.writes_in_flight(job_id)
        progress = store.progress(job_id)
        return {
            "id": job_id,
            "cancel_requested": True,
            "writes_in_flight": in_flight,
            "status": progress.status.value if progress else "cancelled",
        }

    return app


def _result_rows(store: JobStore, job_id: str, status: str | None) -> Iterator[tuple[Operation, UserResult | None]]:
    for op, res in store.iter_results(job_id):
        current = res.status.value if res is not None else "pending"
        if status is None or status == current:
            yield op, res


def _row_dict(op: Operation, res: UserResult | None) -> dict[str, Any]:
    source = dict(op.source)
    out: dict[str, Any] = {
        "row": op.row,
        "user": op.user,
        **{col: source.get(col, "") for col in SOURCE_COLUMNS},
        "status": res.status.value if res else "pending",
        "reason": res.reason if res else None,
        "graph_code": res.graph_code if res else None,
        "graph_message": res.graph_message if res else None,
        "http_status": res.http_status if res else None,
        "attempts": res.attempts if res else 0,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(res.updated_at)) if res else None,
        "detail": res.detail if res else None,
    }
    for name, value in op.extra:
        out.setdefault(name, value)
    return out


def _json_lines(rows: Iterator[tuple[Operation, UserResult | None]]) -> Iterator[bytes]:
    yield b'{"value":['
    first = True
    for op, res in rows:
        item = _row_dict(op, res)
        item["extra"] = dict(op.extra)
        yield (b"" if first else b",") + json.dumps(item).encode()
        first = False
    yield b"]}"


def _csv_lines(rows: Iterator[tuple[Operation, UserResult | None]]) -> Iterator[bytes]:
    header: list[str] | None = None
    buf = io.StringIO()
    writer = csv.writer(buf)
    for op, res in rows:
        item = _row_dict(op, res)
        if header is None:
            header = ["row", "user", *SOURCE_COLUMNS, *RESULT_COLUMNS[2:], *(k for k, _ in op.extra)]
            writer.writerow(header)
        writer.writerow([neutralise("" if item.get(col) is None else str(item.get(col))) for col in header])
        yield buf.getvalue().encode("utf-8")
        buf.seek(0)
        buf.truncate()
    if header is None:
        writer.writerow(["row", "user", *SOURCE_COLUMNS, *RESULT_COLUMNS[2:]])
        yield buf.getvalue().encode("utf-8")
