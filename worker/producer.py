"""Sends chunk tasks to the broker by name, without building the worker's Celery app.

The API, the worker's own scheduler and the reaper all enqueue through this; only the worker
process registers the task itself (`worker.celery_app`).
"""

from __future__ import annotations

from celery import Celery

from config import Settings

# The chunk task's name on the broker (kept as it was, so messages already queued still run).
CHUNK_TASK = "bulklicense.run_chunk"
QUEUE = "bulklicense"


class ChunkProducer:
    """Puts chunk tasks on the broker; safe to share between threads."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    @classmethod
    def from_settings(cls, settings: Settings) -> ChunkProducer:
        """A producer with a bare Celery app: broker and queue only, no tasks, no signals."""
        app = Celery("bulklicense-producer", broker=settings.effective_broker_url, set_as_current=False)
        app.conf.update(
            task_serializer="json",
            accept_content=["json"],
            task_default_queue=QUEUE,
            broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
            broker_connection_retry_on_startup=True,
        )
        return cls(app)

    def send(self, job_id: str, n: int, countdown_s: float = 0.0, budget_started_at: float | None = None) -> None:
        """Enqueue chunk `n` of a job, after `countdown_s` when positive (a `jobs.scheduler.Send`)."""
        self._app.send_task(
            CHUNK_TASK,
            args=[job_id, n, budget_started_at],
            queue=QUEUE,
            countdown=countdown_s if countdown_s > 0 else None,
        )

    def close(self) -> None:
        """Release broker connections."""
        self._app.close()
