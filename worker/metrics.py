"""A worker process's Prometheus metrics: users finished, Graph's answers, 429s, chunks in flight; notifications.

Each worker process serves its own (a thread pool shares one registry, so no multiprocess mode is
needed) on the first free port of `BULKLICENSE_METRICS_PORT` .. `+ BULKLICENSE_METRICS_PORT_RANGE - 1`:
several workers on one host take consecutive ports. A notifications worker serves its own too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from config import Settings
from graphclient.client import GraphAnswer, GraphObserver
from jobs.events import JobEvent
from jobs.models import UserResult
from jobs.notify import DeliveryOutcome

log = logging.getLogger(__name__)

# Retry-After values Graph sends: from fractions of a second (graphsim, scaled) to minutes.
RETRY_AFTER_BUCKETS_S = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class WorkerMetrics:
    """The metrics of one worker process, in a registry of its own; also a JobListener."""

    def __init__(self, chunks_in_flight: Callable[[], int] = lambda: 0) -> None:
        self.registry = process_registry()
        r = self.registry
        self.users = Counter("bulklicense_users_finished_total",
                                      "Users that reached a terminal state, by status and reason",
                                      ["tenant", "status", "reason"], registry=r)
        self.job_events = Counter("bulklicense_job_events_total", "Job events (started, paused, finished, ...)",
                                  ["tenant", "event"], registry=r)
        self.graph_requests = Counter("bulklicense_graph_requests_total",
                                      "Answers from Graph by method and HTTP status ($batch items counted on their"
                                      " own; method $batch is the envelope; status 0: no answer)",
                                      ["tenant", "method", "status"], registry=r)
        self.graph_throttled = Counter("bulklicense_graph_throttled_total",
                                       "Throttled answers from Graph (429, and legacy throttling 503s)",
                                       ["tenant"], registry=r)
        self.retry_after = Histogram("bulklicense_graph_retry_after_seconds",
                                     "Retry-After of throttled answers", ["tenant"],
                                     buckets=RETRY_AFTER_BUCKETS_S, registry=r)
        self.chunks_in_flight = Gauge("bulklicense_chunks_in_flight", "Chunks this worker process is running",
                                      registry=r)
        self.chunks_in_flight.set_function(lambda: float(chunks_in_flight()))

    # -- JobListener -------------------------------------------------------------------------
    def job_event(self, _job_id: str, tenant: str, event: JobEvent, _details: Mapping[str, Any]) -> None:
        """Count the event."""
        self.job_events.labels(tenant, event.value).inc()

    def users_finished(self, _job_id: str, tenant: str, results: Sequence[UserResult]) -> None:
        """Count the users by status and reason."""
        for result in results:
            self.users.labels(tenant, result.status.value, result.reason or "").inc()

    # -- hooks -------------------------------------------------------------------------------
    def graph_observer(self, tenant: str) -> GraphObserver:
        """What a tenant's Graph client tells of each answer."""
        def observe(answer: GraphAnswer) -> None:
            self.graph_requests.labels(tenant, answer.method, str(answer.status)).inc()
            if answer.throttled:
                self.graph_throttled.labels(tenant).inc()
                if answer.retry_after_s is not None:
                    self.retry_after.labels(tenant).observe(answer.retry_after_s)

        return observe

    # -- serving -----------------------------------------------------------------------------
    def serve(self, settings: Settings) -> MetricsServer | None:
        """Serve /metrics on the first free port of the configured range; None when off or all are taken."""
        return serve(self.registry, settings, "worker")


class NotifierMetrics:
    """The metrics of a notifications worker process: attempts by outcome, and what is pending."""

    def __init__(self, pending: Callable[[], float] = lambda: 0.0) -> None:
        self.registry = process_registry()
        self.notifications = Counter("bulklicense_notifications_total",
                                     "Notification attempts by outcome (delivered, retrying, failed, refused,"
                                     " deferred)", ["outcome"], registry=self.registry)
        self.pending = Gauge("bulklicense_notifications_pending",
                             "Notifications waiting for an attempt or a retry, or under way (all workers)",
                             registry=self.registry)
        self.pending.set_function(pending)

    def notified(self, outcome: DeliveryOutcome) -> None:
        """Count a notification attempt (skipped ones, for jobs without a callback, are not)."""
        if outcome is not DeliveryOutcome.SKIPPED:
            self.notifications.labels(outcome.value).inc()

    def serve(self, settings: Settings) -> MetricsServer | None:
        """Serve /metrics on the first free port of the configured range; None when off or all are taken."""
        return serve(self.registry, settings, "notifier")


def process_registry() -> CollectorRegistry:
    """A registry of its own, with the process's memory, CPU and GC."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def serve(registry: CollectorRegistry, settings: Settings, what: str) -> MetricsServer | None:
    """Serve a registry's /metrics on the first free port of the configured range (logged as `<what> metrics`)."""
    if settings.metrics_port is None:
        return None
    first = settings.metrics_port
    for port in range(first, min(first + settings.metrics_port_range, 65536)):
        try:
            server, _ = start_http_server(port, addr=settings.metrics_host, registry=registry)
        except OSError:
            continue  # another worker on this host has it
        log.info("%s metrics on http://%s:%d/metrics", what, settings.metrics_host, port)
        return MetricsServer(server, port)
    log.warning("%s metrics not served: ports %d-%d are all taken", what, first,
                first + settings.metrics_port_range - 1)
    return None


class MetricsServer:
    """A running metrics server and its port."""

    def __init__(self, server: WSGIServer, port: int) -> None:
        self._server = server
        self.port = port

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
