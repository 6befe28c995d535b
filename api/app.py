"""The HTTP API (FastAPI): submit jobs, watch progress, fetch results, cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from fastapi import FastAPI

from api.console import add_console
from api.context import ApiContext, TenantGraphs
from api.errors import exception_handlers
from api.routes import control, events, health, jobs, tenants
from api.security import SecurityHeaders
from config import Settings
from jobs.catalogs import CatalogCache
from jobs.scheduler import Send
from jobs.seats import SeatLedger
from jobs.store import JobStore
from jobs.submit import Submitter
from worker.producer import ChunkProducer


def create_app(
    settings: Settings,
    *,
    redis_client: redis.Redis | None = None,
    send: Send | None = None,
    fetch_skus: Callable[[str], list[dict[str, Any]]] | None = None,
    ceiling_for: Callable[[str], float | None] | None = None,
) -> FastAPI:
    """Build the API; collaborators default to the real ones built from `settings`."""
    client = (redis.Redis.from_url(settings.redis_url, health_check_interval=30) if redis_client is None
              else redis_client)
    graphs = TenantGraphs(settings, client)
    store = JobStore(client, retention_s=settings.retention_s)
    catalogs = CatalogCache(fetch_skus or graphs.subscribed_skus, settings.sku_cache_ttl_s)
    seats = SeatLedger(client, retention_s=settings.retention_s)
    send = send or ChunkProducer.from_settings(settings).send
    submitter = Submitter(settings, store, catalogs, send, seats)
    app = FastAPI(
        title="bulk-license",
        version="0.1.0",
        description="Bulk Microsoft 365 license assignment through Microsoft Graph, as resumable jobs.",
        exception_handlers=exception_handlers(),
    )
    app.state.context = ApiContext(settings=settings, redis=client, store=store, submitter=submitter,
                                   ceiling_for=ceiling_for or graphs.write_ceiling, catalogs=catalogs,
                                   seats=seats, send=send)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(control.router)
    app.include_router(events.router)
    app.include_router(tenants.router)
    add_console(app)
    app.add_middleware(SecurityHeaders, csp_exempt=(app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url))
    return app
