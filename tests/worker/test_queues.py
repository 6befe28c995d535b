"""The broker's queues, declared in one place: routes, RabbitMQ arguments, and depths read on any broker."""

from __future__ import annotations

from kombu import Connection

from config import Settings
from worker.producer import ChunkProducer
from worker.queues import (
    CHUNK_QUEUE,
    CHUNK_TASK,
    DEAD_LETTER_QUEUE,
    NOTIFY_QUEUE,
    NOTIFY_TASK,
    QUEUES,
    queue_depths,
    queue_options,
    task_routes,
)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_every_task_goes_to_exactly_one_declared_queue() -> None:
    routed = [task for spec in QUEUES for task in spec.tasks]
    assert sorted(routed) == sorted({CHUNK_TASK, NOTIFY_TASK}) and len(routed) == len(set(routed))
    assert task_routes() == {CHUNK_TASK: {"queue": CHUNK_QUEUE}, NOTIFY_TASK: {"queue": NOTIFY_QUEUE}}
    options = queue_options(settings())
    assert [q.name for q in options["task_queues"]] == [spec.name for spec in QUEUES]
    assert options["task_default_queue"] == CHUNK_QUEUE and options["task_routes"] == task_routes()


def test_on_redis_each_queue_is_a_plain_list_behind_a_direct_exchange() -> None:
    for queue, name in zip(queue_options(settings())["task_queues"], (CHUNK_QUEUE, NOTIFY_QUEUE), strict=True):
        assert (queue.name, queue.exchange.name, queue.exchange.type, queue.routing_key) == (name, name, "direct", name)
        assert queue.queue_arguments is None and queue.durable


def test_on_rabbitmq_each_queue_is_a_quorum_queue_with_a_delivery_limit_and_a_dead_letter_route() -> None:
    options = queue_options(settings(broker_url="amqp://rabbit.example//", broker_delivery_limit=7))
    for queue in options["task_queues"]:
        assert queue.queue_arguments == {"x-queue-type": "quorum", "x-delivery-limit": 7,
                                         "x-dead-letter-exchange": DEAD_LETTER_QUEUE,
                                         "x-dead-letter-routing-key": DEAD_LETTER_QUEUE}
        assert queue.exchange.type == "topic" and queue.durable and not queue.auto_delete
    # Quorum queues know no global QoS: Celery must apply the prefetch per consumer.
    assert options["worker_detect_quorum_queues"] is True


def test_queue_depths_read_a_redis_broker_too(redis_url: str) -> None:
    producer = ChunkProducer.from_settings(settings(redis_url=redis_url))
    try:
        with Connection(redis_url) as connection:
            assert queue_depths(connection, (CHUNK_QUEUE, DEAD_LETTER_QUEUE)) == {CHUNK_QUEUE: 0,
                                                                                 DEAD_LETTER_QUEUE: 0}
            producer.send("job1", 0)
            producer.send("job1", 1)
            assert queue_depths(connection, (CHUNK_QUEUE,)) == {CHUNK_QUEUE: 2}
    finally:
        producer.close()
