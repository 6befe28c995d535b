"""Per-process chunk worker state: Redis, the store, tenant clients, metrics; heartbeat, reaper, resumer."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from typing import Any

import redis
from celery import Celery

from config import Settings
from graphclient.breaker import BreakerState
from graphclient.errors import GraphError, ThrottleWaitTooLong
from graphclient.retry import RetryPolicy
from graphclient.tenant import TenantClients
from jobs.audit import AuditLog
from jobs.audit_listener import AuditListener
from jobs.catalogs import CatalogCache, CatalogUnavailable
from jobs.chunks import ChunkContext
from jobs.control import ProbeAnswer, pause_unreachable, resume_due
from jobs.due import DueSet
from jobs.events import JobListener, Listeners
from jobs.executor import ChunkDeps
from jobs.group_names import GroupNames
from jobs.models import PauseReason
from jobs.notify import NotifyOnEnd
from jobs.outbox import Outbox
from jobs.quotas import QuotaLedger
from jobs.scheduler import Send, reap
from jobs.seats import SeatLedger, seat_lines
from jobs.store import JobStore
from worker.metrics import MetricsServer, WorkerMetrics
from worker.per_process import PerProcess, worker_redis
from worker.producer import ChunkProducer

log = logging.getLogger(__name__)

# How often paused jobs are looked at (probe times due, tenants Graph stopped answering for): a
# resume should follow Graph's return within a second or so, not wait for the reaper's next pass.
RESUME_CHECK_INTERVAL_S = 1.0
# How often what is due later (hand-backs, notification retries) is looked for in Redis: a task is
# sent at most this late.
DUE_POLL_INTERVAL_S = 0.5


class WorkerRuntime(ChunkContext):
    """Everything a worker process shares between its task threads."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        self.redis = worker_redis(settings)
        self.due = DueSet(self.redis)
        self.producer = ChunkProducer(app, self.due)
        self.send: Send = self.producer.send
        self.store = JobStore(self.redis, retention_s=settings.retention_s, wait_replicas=settings.wait_replicas,
                              wait_timeout_s=settings.redis_wait_timeout_s)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}".replace(":", "-")
        self.running: set[str] = set()
        self.lease_ttl_s = settings.lease_ttl_s
        self.max_countdown_s = settings.visibility_timeout_s / 4
        self.max_chunk_runs = settings.max_chunk_runs
        self.chunk_window = settings.chunk_window
        self.policy = RetryPolicy.from_settings(settings)
        self.catalogs = CatalogCache(self._subscribed_skus, settings.sku_cache_ttl_s)
        self.seats = SeatLedger(self.redis, retention_s=settings.retention_s)
        self.quotas = QuotaLedger.from_settings(self.redis, settings)
        self.group_names = GroupNames(self.redis)
        self.metrics = WorkerMetrics(chunks_in_flight=lambda: len(self.running))
        self.outbox = Outbox(self.redis, retention_s=settings.retention_s)
        self._metrics_server: MetricsServer | None = None
        self.events = Listeners(self._listeners())
        # A profile edit counts from the next chunk; chunks still running keep the client they had.
        self.clients = TenantClients(settings, self.redis, look_now=True, observer_for=self.metrics.graph_observer)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def deps_for(self, tenant: str) -> ChunkDeps:
        """Graph client, throttle, breaker and retry policy for a tenant profile."""
        client = self.clients.get(tenant)
        return ChunkDeps(
            store=self.store,
            graph=client.graph,
            policy=self.policy,
            batch_size=self.settings.batch_size,
            request_deadline_s=self.settings.graph_timeout_s + self.settings.max_inline_wait_s + 5,
            catalog=lambda: self.catalogs.get(tenant),
            seats=self.seats,
            events=self.events,
            seat_recheck_s=self.settings.seat_recheck_interval_s,
            not_found_grace_s=self.settings.not_found_grace_s,
            read_parallelism=self.settings.read_parallelism,
            rng=random.Random(),
            breaker=client.breaker,
            max_run_s=self.settings.chunk_max_run_s,
            group_names=self.group_names,
            quotas=self.quotas,
        )

    def _listeners(self) -> list[JobListener]:
        """Who hears of job events in this process."""
        settings = self.settings
        return [AuditListener(AuditLog.from_settings(self.redis, settings)), self.metrics,
                NotifyOnEnd(self.outbox, self.producer.notify,
                            enabled=lambda tenant: settings.webhook_secret_for(tenant) is not None)]

    def _subscribed_skus(self, tenant: str) -> list[dict[str, Any]]:
        graph = self.clients.get(tenant).graph
        return list(self.policy.call(graph.subscribed_skus))

    def probe(self, job_id: str, tenant: str, reason: PauseReason) -> ProbeAnswer:
        """Whether a paused job's cause is gone (a refused credential or a denied app waits for a person)."""
        if reason is PauseReason.NO_FREE_SEAT:
            return ProbeAnswer(self._seats_free(job_id, tenant))
        if reason is PauseReason.GRAPH_UNAVAILABLE:
            return self._graph_answers(tenant)
        return ProbeAnswer(False)

    def _seats_free(self, job_id: str, tenant: str) -> bool:
        """Whether any SKU the job still needs has a seat free."""
        try:
            catalog = self.catalogs.get(tenant, max_age_s=0)
        except CatalogUnavailable:
            return False
        needed = self.store.plan_counters(job_id).needed
        lines = seat_lines(needed, {}, catalog, self.seats.held_by_others(tenant, job_id))
        return any(line.free > 0 for line in lines)

    def _graph_answers(self, tenant: str) -> ProbeAnswer:
        """Whether Graph answers the tenant again: its breaker is closed, or this probe closes it.

        The probe is a `GET /subscribedSkus` the breaker lets through only when its probe time has
        come and no other worker is probing; otherwise it is refused without being sent.
        """
        client = self.clients.get(tenant)
        state = client.breaker.state()
        if state.open and (state.next_probe_at or 0.0) <= time.time():
            with contextlib.suppress(GraphError, ThrottleWaitTooLong):
                client.graph.subscribed_skus()
            state = client.breaker.state()
        return ProbeAnswer(not state.open, state.next_probe_at)

    def breaker_state(self, tenant: str) -> BreakerState | None:
        """The tenant's breaker, or None for a tenant no longer configured."""
        try:
            return self.clients.get(tenant).breaker.state()
        except KeyError:
            return None

    def start(self) -> None:
        """Start the heartbeat, reaper and resumer threads, and the metrics server."""
        if self._threads:
            return
        self._metrics_server = self.metrics.serve(self.settings)
        loops = ((self._heartbeat_loop, "heartbeat"), (self._reaper_loop, "reaper"), (self._resume_loop, "resumer"),
                 (self._due_loop, "due"))
        for target, name in loops:
            thread = threading.Thread(target=target, name=f"bulklicense-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop background threads, drop our heartbeat, close clients."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            self.store.worker_gone(self.worker_id)
        self.clients.close()
        if self._metrics_server is not None:
            self._metrics_server.stop()

    def _heartbeat_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.heartbeat(self.worker_id, self.settings.lease_ttl_s, list(self.running))
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(self.settings.heartbeat_interval_s)

    def _reaper_loop(self) -> None:
        # Spread reapers of several workers over the interval.
        self._stop.wait(random.uniform(0, self.settings.reaper_interval_s))
        while not self._stop.is_set():
            try:
                reap(self.store, self.send, requeue_after_s=self.settings.requeue_queued_after_s)
            except Exception as exc:  # the reaper must survive Redis, broker or Graph outages
                log.warning("reaper pass failed: %s", exc)
            self._stop.wait(self.settings.reaper_interval_s)

    def _resume_loop(self) -> None:
        while not self._stop.is_set():
            try:
                pause_unreachable(self.store, self.breaker_state, events=self.events)
                resume_due(self.store, self.send, self.probe, now=time.time(),
                           retry_in_s=self.settings.seat_recheck_interval_s, events=self.events)
            except Exception as exc:  # like the reaper, it must survive Redis, broker or Graph outages
                log.warning("resume pass failed: %s", exc)
            self._stop.wait(RESUME_CHECK_INTERVAL_S)

    def _due_loop(self) -> None:
        while not self._stop.is_set():
            try:
                while self.producer.publish_due() and not self._stop.is_set():
                    pass  # a full batch: there may be more due at once
            except Exception as exc:  # like the reaper: what is due waits in Redis until the next pass
                log.warning("sending due tasks failed: %s", exc)
            self._stop.wait(DUE_POLL_INTERVAL_S)


_runtimes = PerProcess(WorkerRuntime)


def get_runtime(settings: Settings, app: Celery) -> WorkerRuntime:
    """The chunk runtime of this process, created (and its threads started) on first use."""
    return _runtimes.get(settings, app)


def stop_runtime(**_: Any) -> None:
    """Stop this process's chunk runtime, if any."""
    _runtimes.stop()
