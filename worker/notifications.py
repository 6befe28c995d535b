"""Per-process state of a notifications worker: the notifier, its metrics, and the outbox's sweeper.

A notifications worker consumes only the notifications queue, with threads of its own; it runs no
chunk, no reaper and no Graph client. Its sweeper sends again, once a second, whatever the outbox
holds that is due: retries whose backoff is over, and notifications whose attempt was lost.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import redis
from celery import Celery

from config import Settings
from jobs.notify import Delivery, Notifier
from jobs.outbox import Outbox
from jobs.store import JobStore
from worker.metrics import MetricsServer, NotifierMetrics
from worker.per_process import PerProcess, worker_redis
from worker.producer import ChunkProducer

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0


class NotifierRuntime:
    """Everything a notifications worker process shares between its task threads."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        self.producer = ChunkProducer(app)
        self.redis = worker_redis(settings)
        self.store = JobStore(self.redis, retention_s=settings.retention_s)
        self.outbox = Outbox(self.redis, retention_s=settings.retention_s)
        self.metrics = NotifierMetrics(pending=self._pending)
        self.notifier = Notifier.from_settings(settings, self.store, self.outbox, observe=self.metrics.notified)
        self._metrics_server: MetricsServer | None = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def start(self) -> None:
        """Start the sweeper thread and the metrics server."""
        if self._sweeper is not None:
            return
        self._metrics_server = self.metrics.serve(self.settings)
        self._sweeper = threading.Thread(target=self._sweep_loop, name="bulklicense-sweeper", daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        """Stop the sweeper, close the HTTP client and the metrics server."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        self.notifier.close()
        if self._metrics_server is not None:
            self._metrics_server.stop()

    def sweep(self) -> int:
        """Queue every notification attempt that is due; how many were queued."""
        due = self.outbox.due(self.notifier.lease_s)
        for payload in due:
            self.producer.notify(Delivery.from_json(payload))
        return len(due)

    def _sweep_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except Exception as exc:  # Redis or the broker away: what was taken is due again after the lease
                log.warning("notification sweep failed: %s", exc)
            self._stop.wait(SWEEP_INTERVAL_S)

    def _pending(self) -> float:
        with contextlib.suppress(redis.RedisError):
            return float(self.outbox.pending())
        return float("nan")  # unknown while Redis is away


_runtimes = PerProcess(NotifierRuntime)


def get_notifier_runtime(settings: Settings, app: Celery) -> NotifierRuntime:
    """The notifications runtime of this process, created (and its sweeper started) on first use."""
    return _runtimes.get(settings, app)


def stop_notifier_runtime(**_: Any) -> None:
    """Stop this process's notifications runtime, if any."""
    _runtimes.stop()
