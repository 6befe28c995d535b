"""Sends chunk and notification tasks to the broker by name, without building the worker's Celery app.

The API, the worker's own scheduler and the reaper all enqueue through this; only the worker
processes register the tasks themselves (`worker.celery_app`). The queues come from
`worker.queues`, the one place they are declared. A chunk due later is not given to the broker with
a countdown: it waits in Redis (`jobs.due`) and workers send it when it is due (`publish_due`), so
no broker message is ever held waiting by a worker. (Notifications wait in their outbox.)
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from celery import Celery

from config import Settings
from jobs.due import DueSet
from jobs.notify import Delivery
from worker.queues import CHUNK_QUEUE, CHUNK_TASK, NOTIFY_QUEUE, NOTIFY_TASK, queue_options

__all__ = ["CHUNK_QUEUE", "CHUNK_TASK", "NOTIFY_QUEUE", "NOTIFY_TASK", "ChunkProducer", "broker_options",
           "celery_options"]

log = logging.getLogger(__name__)

# A due task taken from Redis and not confirmed sent within this is taken again (its taker died).
DUE_LEASE_S = 60.0


def broker_options(settings: Settings) -> dict[str, Any]:
    """Celery settings every app connecting to the broker needs: transport options, TLS for a `rediss://` broker."""
    transport: dict[str, Any] = {}
    if settings.broker_is_amqp:
        transport["confirm_publish"] = True  # a send returns once RabbitMQ has the message
    else:
        transport["visibility_timeout"] = settings.visibility_timeout_s
    if settings.broker_is_store and settings.redis_sentinels:
        transport["master_name"] = settings.redis_sentinel_master
        if settings.redis_sentinel_password is not None:
            transport["sentinel_kwargs"] = {"password": settings.redis_sentinel_password.get_secret_value()}
    options: dict[str, Any] = {"broker_transport_options": transport}
    if settings.broker_use_ssl is not None:
        options["broker_use_ssl"] = settings.broker_use_ssl
    return options


def celery_options(settings: Settings) -> dict[str, Any]:
    """What every Celery app of the product shares: serialization, the broker's options, the queues."""
    return {"task_serializer": "json", "accept_content": ["json"], "broker_connection_retry_on_startup": True,
            **broker_options(settings), **queue_options(settings)}


class ChunkProducer:
    """Puts chunk and notification tasks on the broker (chunks due later in the due set); thread-safe."""

    def __init__(self, app: Celery, due: DueSet | None = None) -> None:
        self._app = app
        self._due = due

    @classmethod
    def from_settings(cls, settings: Settings, due: DueSet | None = None) -> ChunkProducer:
        """A producer with a bare Celery app: broker and queues only, no tasks, no signals."""
        app = Celery("bulklicense-producer", broker=settings.effective_broker_url, set_as_current=False)
        app.conf.update(**celery_options(settings))
        return cls(app, due)

    @property
    def app(self) -> Celery:
        """The Celery app this producer sends with."""
        return self._app

    def send(self, job_id: str, n: int, countdown_s: float = 0.0, budget_started_at: float | None = None) -> None:
        """Enqueue chunk `n` of a job, after `countdown_s` when positive (a `jobs.scheduler.Send`)."""
        args: list[Any] = [job_id, n, budget_started_at]
        if countdown_s <= 0:
            self._app.send_task(CHUNK_TASK, args=args)
            return
        if self._due is None:
            raise ValueError("a task due later needs the due set (this producer has none)")
        member = json.dumps({"id": uuid.uuid4().hex, "task": CHUNK_TASK, "args": args}, separators=(",", ":"))
        self._due.add(member, self._due.clock() + countdown_s)

    def notify(self, delivery: Delivery) -> None:
        """Enqueue an attempt to notify a job's callback URLs (its retries come from the outbox)."""
        self._app.send_task(NOTIFY_TASK, args=[delivery.to_json()])

    def publish_due(self, limit: int = 100) -> int:
        """Send the tasks whose time has come; returns how many (the rest wait for the next call).

        A task is forgotten only once the broker has it: if sending fails, it is sent again after
        the lease, by whichever worker takes it then.
        """
        if self._due is None:
            return 0
        sent = 0
        for member in self._due.take(lease_s=DUE_LEASE_S, limit=limit):
            entry = json.loads(member)
            self._app.send_task(entry["task"], args=entry["args"])
            self._due.done(member)
            sent += 1
        return sent

    def close(self) -> None:
        """Release broker connections."""
        self._app.close()
