"""Sends chunk and notification tasks to the broker by name, without building the worker's Celery app.

The API, the worker's own scheduler and the reaper all enqueue through this; only the worker
process registers the tasks themselves (`worker.celery_app`). The queues are declared here, once,
for every app that connects to the broker.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

from config import Settings
from jobs.notify import Delivery

# The chunk task's name on the broker (kept as it was, so messages already queued still run).
CHUNK_TASK = "bulklicense.run_chunk"
# One attempt to notify a job's callback URLs.
NOTIFY_TASK = "bulklicense.notify"

# Chunks, run by `bulklicense worker`.
CHUNK_QUEUE = "bulklicense"
# Notifications, run by a notifications worker of their own (`bulklicense notifier`), so that a slow
# or hostile receiver can never hold a chunk's slot.
NOTIFY_QUEUE = "bulklicense.notify"
# Each queue as Celery would create it by name (a direct exchange of the same name), declared here.
QUEUES = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]
               for name in (CHUNK_QUEUE, NOTIFY_QUEUE))
TASK_QUEUES = {CHUNK_TASK: CHUNK_QUEUE, NOTIFY_TASK: NOTIFY_QUEUE}


def queue_options() -> dict[str, Any]:
    """Celery settings for the queues: declared once here, each task routed to its own."""
    return {
        "task_queues": QUEUES,
        "task_default_queue": CHUNK_QUEUE,
        "task_routes": {task: {"queue": queue} for task, queue in TASK_QUEUES.items()},
    }


def broker_options(settings: Settings) -> dict[str, Any]:
    """Celery settings every app connecting to the broker needs (TLS for a `rediss://` broker)."""
    options: dict[str, Any] = {"broker_transport_options": {"visibility_timeout": settings.visibility_timeout_s}}
    if settings.broker_use_ssl is not None:
        options["broker_use_ssl"] = settings.broker_use_ssl
    return options


class ChunkProducer:
    """Puts chunk and notification tasks on the broker; safe to share between threads."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    @classmethod
    def from_settings(cls, settings: Settings) -> ChunkProducer:
        """A producer with a bare Celery app: broker and queues only, no tasks, no signals."""
        app = Celery("bulklicense-producer", broker=settings.effective_broker_url, set_as_current=False)
        app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
            **broker_options(settings),
            **queue_options(),
        )
        return cls(app)

    def send(self, job_id: str, n: int, countdown_s: float = 0.0, budget_started_at: float | None = None) -> None:
        """Enqueue chunk `n` of a job, after `countdown_s` when positive (a `jobs.scheduler.Send`)."""
        self._app.send_task(
            CHUNK_TASK,
            args=[job_id, n, budget_started_at],
            queue=CHUNK_QUEUE,
            countdown=countdown_s if countdown_s > 0 else None,
        )

    def notify(self, delivery: Delivery) -> None:
        """Enqueue an attempt to notify a job's callback URLs (its retries come from the outbox)."""
        self._app.send_task(NOTIFY_TASK, args=[delivery.to_json()], queue=NOTIFY_QUEUE)

    def close(self) -> None:
        """Release broker connections."""
        self._app.close()
