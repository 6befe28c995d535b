"""The Celery app factory, and the module-level app for `celery -A worker.celery_app`.

One app for both kinds of worker process: `bulklicense worker` consumes the chunk queue,
`bulklicense notifier` the notifications queue (`-Q`), each with a pool of its own. The runtime a
process starts follows the queues it consumes.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from config import Settings, get_settings
from config.logs import configure_logging
from jobs.chunks import execute_chunk
from jobs.notify import Delivery
from worker.notifications import get_notifier_runtime, stop_notifier_runtime
from worker.producer import celery_options
from worker.queues import CHUNK_QUEUE, CHUNK_TASK, NOTIFY_QUEUE, NOTIFY_TASK, declare_dead_letter_queue
from worker.runtime import get_runtime, stop_runtime

log = logging.getLogger(__name__)


def create_celery_app(settings: Settings) -> Celery:
    """A Celery app configured for at-least-once chunk execution (Redis or RabbitMQ broker)."""
    app = Celery("bulklicense", broker=settings.effective_broker_url)
    app.conf.update(
        task_ignore_result=True,
        # At-least-once: ack after the chunk ran, requeue if the worker dies mid-task, take one
        # message per free slot. Chunks are idempotent, so running one twice is safe.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_concurrency=settings.worker_concurrency,
        worker_pool="threads",
        # For Flower: task events on the broker (also `celery worker -E`).
        worker_send_task_events=settings.worker_task_events,
        **celery_options(settings),
    )

    @app.task(name=CHUNK_TASK, bind=False)  # type: ignore[untyped-decorator]
    def chunk_task(job_id: str, n: int, budget_started_at: float | None = None) -> str:
        # Thin: unpack ids, hand over to the job domain with this process's runtime.
        return execute_chunk(get_runtime(settings, app), job_id, int(n), budget_started_at)

    # Acked when it starts: a notification is kept in the outbox until done, and the outbox's
    # sweeper sends it again if this attempt is lost (a redelivery hours later would only repeat it).
    @app.task(name=NOTIFY_TASK, bind=False, acks_late=False)  # type: ignore[untyped-decorator]
    def notify_task(delivery: dict[str, Any]) -> str:
        # Thin: one attempt (per callback, for a new notification); the outbox schedules the next.
        outcomes = get_notifier_runtime(settings, app).notifier.deliver(Delivery.from_json(delivery))
        return ",".join(outcome.value for outcome in outcomes)

    def _start_runtimes(**_: Any) -> None:
        # The runtimes of the queues this process consumes (all of them when no -Q was given).
        consumed = set(app.amqp.queues.consume_from)
        if CHUNK_QUEUE in consumed:
            get_runtime(settings, app)
        if NOTIFY_QUEUE in consumed:
            get_notifier_runtime(settings, app)

    def _stop_runtimes(**_: Any) -> None:
        stop_runtime()
        stop_notifier_runtime()

    def _ready(**_: Any) -> None:
        if settings.broker_is_amqp:  # where RabbitMQ moves a message at its delivery limit
            try:
                with app.connection_for_write() as connection:
                    declare_dead_letter_queue(connection)
            except Exception as exc:  # the worker still runs; such messages are then dropped, not kept
                log.warning("the dead-letter queue could not be declared: %s", exc)
        _start_runtimes()

    def _setup_logging(**_: Any) -> None:
        # Connected, this keeps Celery from installing handlers of its own: every line goes out
        # in the configured format, secrets masked.
        configure_logging(settings)

    signals.setup_logging.connect(_setup_logging, weak=False)
    signals.worker_ready.connect(_ready, weak=False)
    signals.worker_process_init.connect(_start_runtimes, weak=False)
    signals.worker_shutdown.connect(_stop_runtimes, weak=False)
    return app


_app: Celery | None = None


def __getattr__(name: str) -> Celery:
    # `celery -A worker.celery_app worker` looks up `app`: build it on demand, never at import.
    global _app
    if name in ("app", "celery"):
        if _app is None:
            _app = create_celery_app(get_settings())
        return _app
    raise AttributeError(name)
