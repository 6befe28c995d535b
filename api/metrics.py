"""The API's Prometheus metrics at `GET /metrics`: what Redis and the broker hold.

Jobs by tenant and status (the most recent `BULKLICENSE_METRICS_RECENT_JOBS`, read in one round
trip), the broker's queue depth, the current write rate of each tenant with recent jobs (the shared
throttle's), audit events lost to the trail's size bound, and the API process's own figures. These
are the same whichever process reports them, so they come from the API only; what happens inside
workers (users finished, Graph's answers, chunks in flight) comes from each worker's own metrics
server. A page is collected at most every `BULKLICENSE_METRICS_CACHE_S`: scrapes in between, however
many, get the same page and cost Redis nothing.

Who may scrape: with `BULKLICENSE_METRICS_TOKEN` set, whoever sends `Authorization: Bearer <token>`;
without it, only this host (a loopback peer naming a loopback host, not relayed by a proxy), as the
page names every tenant with recent jobs.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import redis
from celery import Celery
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import Response
from kombu.exceptions import OperationalError as BrokerUnreachable
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.context import ApiContext
from jobs.due import DueSet
from jobs.models import JobStatus
from worker.producer import celery_options
from worker.queues import DEAD_LETTER_QUEUE, QUEUES, queue_depths

log = logging.getLogger(__name__)

# Where kombu's Redis transport keeps messages delivered to a worker and not yet acknowledged.
UNACKED_KEY = "unacked"
BROKER_TIMEOUT_S = 2.0
# Headers a proxy adds: a request relayed by one is not this host's own, whatever its peer address.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")
LOCAL_ONLY = ("GET /metrics answers only on this host (from a loopback address) unless BULKLICENSE_METRICS_TOKEN"
              " is set; then it needs Authorization: Bearer <token>")


class QueueReader(Protocol):
    """The broker's queues as the metrics see them."""

    def depths(self) -> dict[str, int]:
        """Messages waiting in each queue."""
        ...

    def unacked(self) -> int | None:
        """Messages delivered to workers and not yet acknowledged; None where the broker does not say."""
        ...


class RedisQueues:
    """A Redis broker (kombu's transport): each queue is a list, unacknowledged messages a hash."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def depths(self) -> dict[str, int]:
        """Messages waiting in each queue."""
        return {spec.name: int(self._client.llen(spec.name)) for spec in QUEUES}

    def unacked(self) -> int | None:
        """Messages taken by workers and not yet acknowledged."""
        return int(self._client.hlen(UNACKED_KEY))


class AmqpQueues:
    """RabbitMQ: queue depths by a passive declare; unacknowledged messages are in RabbitMQ's own metrics."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def depths(self) -> dict[str, int]:
        """Messages ready in each queue, the dead-letter queue included."""
        names = (*(spec.name for spec in QUEUES), DEAD_LETTER_QUEUE)
        with self._app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
            return queue_depths(connection, names)

    def unacked(self) -> int | None:
        """Not known through AMQP (rabbitmq_prometheus: `rabbitmq_queue_messages_unacked`)."""
        return None


class StoreCollector(Collector):
    """Reads jobs, queue and throttle state from Redis when scraped; a Redis outage is `bulklicense_redis_up 0`."""

    def __init__(self, context: ApiContext, queues: QueueReader | None) -> None:
        self._context = context
        self._queues = queues
        self._due = DueSet(context.redis)

    def collect(self) -> Iterator[Metric]:
        """Every family, read now."""
        up = GaugeMetricFamily("bulklicense_redis_up", "1 when the job store and the broker answered this scrape")
        try:
            jobs, active = self._jobs()
            families = [jobs, *self._queue(), self._rates(active), self._audit_trimmed()]
        except (redis.RedisError, OSError, BrokerUnreachable) as exc:
            log.warning("metrics: Redis or the broker unreachable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _jobs(self) -> tuple[GaugeMetricFamily, list[str]]:
        """Recent jobs by tenant and status (every status of each tenant among them), and those tenants."""
        context = self._context
        recent = context.settings.metrics_recent_jobs
        found = context.store.tenants_and_statuses(context.store.recent_jobs(recent))
        tenants = sorted({tenant for tenant, _ in found})
        counts = {(tenant, status.value): 0 for tenant in tenants for status in JobStatus}
        for tenant, job_status in found:
            counts[(tenant, job_status.value)] += 1
        family = GaugeMetricFamily("bulklicense_jobs", f"Jobs by status, among the {recent} most recent",
                                   labels=["tenant", "status"])
        for (tenant, status), n in sorted(counts.items()):
            family.add_metric([tenant, status], n)
        return family, tenants

    def _queue(self) -> list[GaugeMetricFamily]:
        """Messages waiting in the broker's queues, those taken and not yet acknowledged, tasks due later."""
        delayed = GaugeMetricFamily("bulklicense_delayed_tasks",
                                    "Chunks waiting in Redis for their time (hand-backs, rows dated ahead)")
        delayed.add_metric([], self._due.count())
        if self._queues is None:
            return [delayed]
        depth = GaugeMetricFamily("bulklicense_queue_messages", "Tasks waiting in each of the broker's queues",
                                  labels=["queue"])
        for name, count in sorted(self._queues.depths().items()):
            depth.add_metric([name], count)
        families = [depth, delayed]
        unacked_count = self._queues.unacked()
        if unacked_count is not None:
            unacked = GaugeMetricFamily("bulklicense_queue_unacked_messages",
                                        "Tasks taken by workers and not yet acknowledged (running)")
            unacked.add_metric([], unacked_count)
            families.append(unacked)
        return families

    def _rates(self, tenants: list[str]) -> GaugeMetricFamily:
        """The current write rate of each rate-limited tenant with recent jobs, as the shared throttle adapted it."""
        family = GaugeMetricFamily("bulklicense_throttle_rate_writes_per_second",
                                   "The throttle's current write rate per tenant (lowered after 429s)",
                                   labels=["tenant"])
        for tenant in tenants:
            rate = self._context.ceiling_for(tenant) if tenant in self._context.settings.tenants else None
            if rate is not None:
                family.add_metric([tenant], rate)
        return family

    def _audit_trimmed(self) -> CounterMetricFamily:
        """Audit events each tenant's trail lost to its size bound (BULKLICENSE_AUDIT_MAX_EVENTS)."""
        family = CounterMetricFamily("bulklicense_audit_events_trimmed",
                                     "Audit events pushed out of a tenant's trail by its size bound (alert on any)",
                                     labels=["tenant"])
        for tenant, n in sorted(self._context.audit.trimmed().items()):
            family.add_metric([tenant], n)
        return family


def queue_reader(context: ApiContext) -> QueueReader | None:
    """How the broker's queues are read: the job store's Redis, a Redis of its own, RabbitMQ; None otherwise."""
    settings = context.settings
    if settings.broker_is_store:
        return RedisQueues(context.redis)
    url = settings.effective_broker_url
    if url.startswith(("redis://", "rediss://")):
        return RedisQueues(redis.Redis.from_url(url, socket_connect_timeout=BROKER_TIMEOUT_S,
                                                socket_timeout=BROKER_TIMEOUT_S, **settings.redis_options(url)))
    if settings.broker_is_amqp:
        app = Celery("bulklicense-metrics", broker=url, set_as_current=False)
        app.conf.update(broker_connection_timeout=BROKER_TIMEOUT_S, **celery_options(settings))
        return AmqpQueues(app)
    return None


def metrics_registry(context: ApiContext) -> CollectorRegistry:
    """The API's registry: the store's state and the process's own collectors."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(context, queue_reader(context)))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class PageCache:
    """The rendered page, kept `ttl_s`; one render at a time, and while one runs the others get the last page."""

    def __init__(self, render: Callable[[], bytes], ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._render = render
        self._ttl_s = ttl_s
        self._clock = clock
        self._page: tuple[float, bytes] | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        """The page, rendered now if the kept one is too old."""
        kept = self._page
        if kept is not None and self._clock() - kept[0] < self._ttl_s:
            return kept[1]
        if kept is not None and not self._lock.acquire(blocking=False):
            return kept[1]  # another scrape is rendering: the last page meanwhile
        if kept is None:
            self._lock.acquire()
        try:
            kept = self._page  # rendered meanwhile by the scrape this one waited for
            if kept is None or self._clock() - kept[0] >= self._ttl_s:
                kept = (self._clock(), self._render())
                self._page = kept
            return kept[1]
        finally:
            self._lock.release()


def add_metrics(app: FastAPI) -> None:
    """Serve `GET /metrics` (not in the OpenAPI document) unless BULKLICENSE_API_METRICS is off."""
    context: ApiContext = app.state.context
    if not context.settings.api_metrics:
        return
    registry = metrics_registry(context)
    page = PageCache(lambda: generate_latest(registry), context.settings.metrics_cache_s)
    token = context.settings.metrics_token
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    def metrics(request: Request) -> Response:
        if token is not None:
            if not _bearer_matches(request, token.get_secret_value()):
                raise HTTPException(401, "missing or wrong metrics token", headers={"WWW-Authenticate": "Bearer"})
        elif not from_this_host(request):
            raise HTTPException(403, LOCAL_ONLY)
        return Response(page.get(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)


def from_this_host(request: Request) -> bool:
    """Whether a request comes from this host itself: a loopback peer, a loopback Host, no proxy's headers.

    The Host check keeps a web page out (DNS rebinding: the browser sends the page's own host name);
    the headers check keeps out what a proxy on this host relays from elsewhere.
    """
    peer = request.client.host if request.client else ""
    host = request.url.hostname or ""
    return _is_loopback(peer) and (host == "localhost" or _is_loopback(host)) and \
        not any(name in request.headers for name in FORWARDING_HEADERS)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def _bearer_matches(request: Request, token: str) -> bool:
    """Whether the request carries `Authorization: Bearer <token>` (compared in constant time)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
