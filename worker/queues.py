"""The broker's queues, declared in one place: their names, which task goes to which, their RabbitMQ arguments.

Every Celery app of the product (the workers', the producer the API and the workers send with) takes
its queues and routes from here, so a queue is added with one line in `QUEUES`.

On RabbitMQ every task queue is a quorum queue (replicated, durable, at-least-once) with a delivery
limit: a message delivered `BULKLICENSE_BROKER_DELIVERY_LIMIT` times without being acknowledged
(each time its worker died holding it) is dead-lettered to `bulklicense.dead`, kept there for a
person to look at, instead of looping. Nothing is lost by it: the chunk's state in Redis still says
it is unfinished, the reaper sends it again, and `BULKLICENSE_MAX_CHUNK_RUNS` ends a chunk that
never finishes. Quorum queues know no global QoS: Celery applies the prefetch per consumer when it
detects them (`worker_detect_quorum_queues`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from config import Settings

# Task names on the broker (kept as they were, so messages already queued still run).
CHUNK_TASK = "bulklicense.run_chunk"
NOTIFY_TASK = "bulklicense.notify"  # one attempt to notify a job's callback URLs
# Chunks, run by `bulklicense worker`.
CHUNK_QUEUE = "bulklicense"
# Notifications, run by a notifications worker of their own (`bulklicense notifier`), so that a slow
# or hostile receiver can never hold a chunk's slot.
NOTIFY_QUEUE = "bulklicense.notify"
# Where RabbitMQ puts a message that reached its delivery limit; nothing consumes it.
DEAD_LETTER_QUEUE = "bulklicense.dead"
DEAD_LETTER_MAX_MESSAGES = 10_000


@dataclass(frozen=True)
class QueueSpec:
    """One task queue and the tasks routed to it."""

    name: str
    tasks: tuple[str, ...]


# One line per queue. `bulklicense worker` and `bulklicense notifier` each consume one (`-Q`).
QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec(CHUNK_QUEUE, (CHUNK_TASK,)),
    QueueSpec(NOTIFY_QUEUE, (NOTIFY_TASK,)),
)


def queue_arguments(settings: Settings) -> dict[str, Any] | None:
    """RabbitMQ arguments of a task queue: quorum, the delivery limit, the dead-letter route; None elsewhere."""
    if not settings.broker_is_amqp:
        return None
    return {"x-queue-type": "quorum", "x-delivery-limit": settings.broker_delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTER_QUEUE, "x-dead-letter-routing-key": DEAD_LETTER_QUEUE}


def task_queues(settings: Settings) -> list[Queue]:
    """The kombu queues of `QUEUES`, each behind an exchange of its own name.

    On RabbitMQ the exchange is a topic exchange: Celery's native delayed delivery, which it sets
    up for quorum queues, can then bind to it (the product itself sends nothing with a countdown).
    """
    exchange_type = "topic" if settings.broker_is_amqp else "direct"
    return [_queue(spec.name, queue_arguments(settings), exchange_type) for spec in QUEUES]


def task_routes() -> dict[str, dict[str, str]]:
    """Task name -> the queue it is sent to."""
    return {task: {"queue": spec.name} for spec in QUEUES for task in spec.tasks}


def queue_options(settings: Settings) -> dict[str, Any]:
    """The Celery settings that declare and route the queues (the same for every app)."""
    return {"task_default_queue": CHUNK_QUEUE, "task_queues": task_queues(settings), "task_routes": task_routes(),
            "worker_detect_quorum_queues": True}


def _queue(name: str, arguments: dict[str, Any] | None, exchange_type: str = "direct") -> Queue:
    """A durable queue behind an exchange of its own name, bound with its name."""
    exchange = Exchange(name, type=exchange_type, durable=True)  # type: ignore[no-untyped-call]
    return Queue(name, exchange, routing_key=name, queue_arguments=arguments)  # type: ignore[no-untyped-call]


def declare_dead_letter_queue(connection: Connection) -> None:
    """Declare the dead-letter exchange and queue RabbitMQ moves messages to at their delivery limit."""
    queue = _queue(DEAD_LETTER_QUEUE, {"x-queue-type": "quorum", "x-max-length": DEAD_LETTER_MAX_MESSAGES})
    queue(connection.default_channel).declare()  # type: ignore[no-untyped-call]


def queue_depths(connection: Connection, names: tuple[str, ...]) -> dict[str, int]:
    """Messages ready in each queue (not yet delivered), on any broker; a queue never declared counts 0."""
    depths: dict[str, int] = {}
    for name in names:
        channel = connection.channel()  # type: ignore[no-untyped-call]  # a refused passive declare closes its channel (AMQP)
        try:
            depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
        except connection.channel_errors:
            depths[name] = 0
        finally:
            channel.close()
    return depths
