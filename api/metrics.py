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
from prometheus_client.core import GaugeMetricFamily, Metric
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
            families = [self._jobs(), *self._queue(), self._rates()]
        except (redis.RedisError, OSError, BrokerUnreachable) as exc:
            log.warning("metrics: Redis or the broker unreachable: %s", exc)
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
        """Messages waiting in the broker's queues, those taken and not yet acknowledged, tasks due later."""
        delayed = GaugeMetricFamily("bulklicense_delayed_tasks",
                                    "Tasks waiting in Redis for their time (hand-backs, notification retries)")
        delayed.add_metric([], self._due.count())
        if self._queues is None:
            return [delayed]
        depth = GaugeMetricFamily("bulklicense_queue_messages", "Tasks waiting in the broker's queue",
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

