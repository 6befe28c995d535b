"""The API's Prometheus metrics at `GET /metrics`: what Redis and the broker hold, read at each scrape.

Jobs by tenant and status (the most recent `BULKLICENSE_METRICS_RECENT_JOBS`), the broker's queue
depth, each tenant's current write rate (the shared throttle's), and the API process's own figures.
These are the same whichever process reports them, so they come from the API only; what happens
inside workers (users finished, Graph's answers, chunks in flight) comes from each worker's own
metrics server. With `BULKLICENSE_METRICS_TOKEN` set, a scrape needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator

import redis
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.context import ApiContext
from config import Settings
from jobs.models import JobStatus
from worker.producer import CHUNK_QUEUE, NOTIFY_QUEUE

log = logging.getLogger(__name__)

# Where kombu's Redis transport keeps messages delivered to a worker and not yet acknowledged.
UNACKED_KEY = "unacked"
BROKER_TIMEOUT_S = 2.0


class StoreCollector(Collector):
    """Reads jobs, queue and throttle state from Redis when scraped; a Redis outage is `bulklicense_redis_up 0`."""

    def __init__(self, context: ApiContext, broker: redis.Redis | None) -> None:
        self._context = context
        self._broker = broker

    def collect(self) -> Iterator[Metric]:
        """Every family, read now."""
        up = GaugeMetricFamily("bulklicense_redis_up", "1 when the job store and the broker answered this scrape")
        try:
            families = [self._jobs(), *self._queue(), self._rates()]
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: Redis unreachable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _jobs(self) -> GaugeMetricFamily:
        """Recent jobs by tenant and status (every status of every tenant profile, zeros included)."""
        context = self._context
        counts = {(tenant, status.value): 0 for tenant in context.settings.tenants for status in JobStatus}
        for job_id in context.store.recent_jobs(context.settings.metrics_recent_jobs):
            progress = context.store.progress(job_id)
            if progress is not None:
                key = (progress.tenant, progress.status.value)
                counts[key] = counts.get(key, 0) + 1
        recent = context.settings.metrics_recent_jobs
        family = GaugeMetricFamily("bulklicense_jobs", f"Jobs by status, among the {recent} most recent",
                                   labels=["tenant", "status"])
        for (tenant, status), n in sorted(counts.items()):
            family.add_metric([tenant, status], n)
        return family

    def _queue(self) -> list[GaugeMetricFamily]:
        """Messages waiting in the broker's queue, and those taken by workers and not yet acknowledged."""
        if self._broker is None:
            return []
        depth = GaugeMetricFamily("bulklicense_queue_messages", "Tasks waiting in each of the broker's queues",
                                  labels=["queue"])
        for queue in (CHUNK_QUEUE, NOTIFY_QUEUE):
            depth.add_metric([queue], int(self._broker.llen(queue)))
        unacked = GaugeMetricFamily("bulklicense_queue_unacked_messages",
                                    "Tasks taken by workers and not yet acknowledged (running, or waiting for their"
                                    " countdown)")
        unacked.add_metric([], int(self._broker.hlen(UNACKED_KEY)))
        return [depth, unacked]

    def _rates(self) -> GaugeMetricFamily:
        """Each rate-limited tenant's current write rate, as the shared throttle has adapted it."""
        family = GaugeMetricFamily("bulklicense_throttle_rate_writes_per_second",
                                   "The throttle's current write rate per tenant (lowered after 429s)",
                                   labels=["tenant"])
        for tenant in self._context.settings.tenants:
            rate = self._context.ceiling_for(tenant)
            if rate is not None:
                family.add_metric([tenant], rate)
        return family


def broker_client(settings: Settings, store: redis.Redis) -> redis.Redis | None:
    """A client to the broker's Redis (the job store's when they are one); None for a broker that is not Redis."""
    url = settings.effective_broker_url
    if url == settings.redis_url:
        return store
    if not url.startswith(("redis://", "rediss://")):
        return None
    return redis.Redis.from_url(url, socket_connect_timeout=BROKER_TIMEOUT_S, socket_timeout=BROKER_TIMEOUT_S,
                                **settings.redis_options(url))


def metrics_registry(context: ApiContext) -> CollectorRegistry:
    """The API's registry: the store's state and the process's own collectors."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(context, broker_client(context.settings, context.redis)))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def add_metrics(app: FastAPI) -> None:
    """Serve `GET /metrics` (not in the OpenAPI document) unless BULKLICENSE_API_METRICS is off."""
    context: ApiContext = app.state.context
    if not context.settings.api_metrics:
        return
    registry = metrics_registry(context)
    token = context.settings.metrics_token
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    def metrics(request: Request) -> Response:
        if token is not None and not _bearer_matches(request, token.get_secret_value()):
            raise HTTPException(401, "missing or wrong metrics token", headers={"WWW-Authenticate": "Bearer"})
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)


def _bearer_matches(request: Request, token: str) -> bool:
    """Whether the request carries `Authorization: Bearer <token>` (compared in constant time)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

