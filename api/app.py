"""The HTTP API (FastAPI): submit jobs, watch progress, fetch results, cancel, read the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any

import redis
from fastapi import FastAPI
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from api.bodies import BodyPace
from api.broker import broker_check, send_after_commit
from api.console import add_console
from api.context import ApiContext, TenantGraphs
from api.errors import exception_handlers
from api.key_attempts import FailedKeyAttempts
from api.lanes import Lanes
from api.metrics import add_metrics
from api.reference import add_reference
from api.routes import approvals, audit, control, events, health, jobs, scans, tenants
from api.security import SecurityHeaders
from config import Settings
from config.redis_clients import redis_client as config_redis_client
from jobs.audit import AuditLog
from jobs.catalogs import CatalogCache
from jobs.due import DueSet
from jobs.events import Listeners
from jobs.group_errors import GroupErrorReport
from jobs.idempotency import IdempotencyStore
from jobs.notify import Delivery, NotifyOnEnd
from jobs.outbox import Outbox
from jobs.quotas import QuotaLedger
from jobs.scheduler import Send
from jobs.seats import SeatLedger
from jobs.skus import SkuCatalog
from jobs.store import JobStore
from jobs.submit import Submitter
from webhooks.policy import CallbackPolicy
from worker.producer import ChunkProducer

# A few quick retries ride out a blip; an outage is answered (503) within a second.
API_REDIS_OPTIONS: dict[str, Any] = {
    "health_check_interval": 30, "socket_connect_timeout": 2.0,
    "retry": Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), retries=3)}


def api_redis(url: str, **options: Any) -> redis.Redis:
    """An API Redis client to `url` (`options`: further connection options, e.g. `Settings.redis_options`)."""
    return redis.Redis.from_url(url, **API_REDIS_OPTIONS, **options)


def create_app(
    settings: Settings,
    *,
    redis_client: redis.Redis | None = None,
    send: Send | None = None,
    fetch_skus: Callable[[str], list[dict[str, Any]]] | None = None,
    ceiling_for: Callable[[str], float | None] | None = None,
    check_broker: Callable[[], None] | None = None,
    idempotency: IdempotencyStore | None = None,
    callbacks: CallbackPolicy | None = None,
    group_errors: Callable[[str, SkuCatalog, int], GroupErrorReport] | None = None,
    notify: Callable[[Delivery], None] | None = None,
) -> FastAPI:
    """Build the API; collaborators default to the real ones built from `settings`."""
    client = redis_client or config_redis_client(settings, **API_REDIS_OPTIONS)
    graphs = TenantGraphs(settings, client)
    store = JobStore(client, retention_s=settings.retention_s, wait_replicas=settings.wait_replicas,
                     wait_timeout_s=settings.redis_wait_timeout_s)
    catalogs = CatalogCache(fetch_skus or graphs.subscribed_skus, settings.sku_cache_ttl_s)
    seats = SeatLedger(client, retention_s=settings.retention_s)
    producer = ChunkProducer.from_settings(settings, DueSet(client))  # a bare Celery app: it connects when it sends
    sender = send_after_commit(send or producer.send)
    # A decision is notified as a worker notifies a job's end: kept in the outbox, then queued.
    notifications = NotifyOnEnd(Outbox(client, retention_s=settings.retention_s), notify or producer.notify,
                                enabled=lambda tenant: settings.webhook_secret_for(tenant) is not None)
    quotas = QuotaLedger.from_settings(client, settings)
    submitter = Submitter(settings, store, catalogs, sender, seats, callbacks, quotas=quotas)
    lanes = Lanes.from_settings(settings)
    app = FastAPI(
        title="bulk-license",
        version=metadata.version("bulk-license"),  # also the console's cache-busting tag
        description="Bulk Microsoft 365 license assignment through Microsoft Graph, as resumable jobs.",
        exception_handlers=exception_handlers(),
        # /docs and /redoc are served by api.reference, from the package's own files.
        docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None,
    )
    app.state.context = ApiContext(
        settings=settings, redis=client, store=store, submitter=submitter,
        audit=AuditLog.from_settings(client, settings), idempotency=idempotency or IdempotencyStore(client),
        ceiling_for=ceiling_for or graphs.write_ceiling, check_broker=check_broker or broker_check(settings),
        catalogs=catalogs, seats=seats, send=sender, key_attempts=FailedKeyAttempts.from_settings(settings),
        lanes=lanes, pace=BodyPace(settings.api_body_timeout_s, settings.api_body_min_rate_bytes_s), quotas=quotas,
        group_errors=group_errors or graphs.group_error_report, events=Listeners([notifications]),
    )
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(control.router)
    app.include_router(approvals.router)
    app.include_router(events.router)
    app.include_router(tenants.router)
    app.include_router(scans.router)
    app.include_router(audit.router)
    add_console(app)
    policies = add_reference(app)
    add_metrics(app)
    app.add_middleware(SecurityHeaders, policies=policies)
    return app
