"""Chunks due later wait in Redis (jobs.due), never in the broker, and workers send them when due.

A broker holds a countdown message in a worker's memory, unacknowledged, until it is due: RabbitMQ
cancels a consumer that holds one past its consumer_timeout, Redis redelivers it after the
visibility timeout. So a chunk handed back for a long Retry-After goes to the due set instead.
"""

from __future__ import annotations

import base64
import json

import pytest
import redis
from kombu.exceptions import OperationalError

from config import Settings
from jobs.due import DUE_KEY, DueSet
from tests.fakes import FakeClock
from worker.producer import DUE_LEASE_S, ChunkProducer
from worker.queues import CHUNK_QUEUE, CHUNK_TASK


def settings(redis_url: str, **values: object) -> Settings:
    return Settings(_env_file=None, redis_url=redis_url, **values)  # type: ignore[arg-type]


def broker_messages(client: redis.Redis) -> list[tuple[str, list[object]]]:
    """(task, args) of each message in the Redis broker's queue, oldest first."""
    out = []
    for raw in reversed(client.lrange(CHUNK_QUEUE, 0, -1)):
        message = json.loads(raw)
        body = message["body"]  # kombu's Redis transport keeps it base64-encoded
        out.append((message["headers"]["task"], json.loads(base64.b64decode(body) if
                                                           message["properties"]["body_encoding"] == "base64"
                                                           else body)[0]))
    return out


def test_members_are_taken_when_due_and_again_after_the_lease_unless_done(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    due = DueSet(redis_client, clock=clock)
    due.add("late", clock() + 20)
    due.add("soon", clock() + 10)
    assert due.take(lease_s=60) == []
    clock.advance(10)
    assert due.take(lease_s=60) == ["soon"]
    assert due.take(lease_s=60) == []  # leased: nobody else takes it meanwhile
    clock.advance(15)
    assert due.take(lease_s=60) == ["late"]
    due.done("late")
    clock.advance(60)  # "soon" was never confirmed: its taker died; it comes back after the lease
    assert due.take(lease_s=60) == ["soon"]
    due.done("soon")
    assert due.count() == 0
    for i in range(5):
        due.add(f"m{i}", clock() - 5 + i)
    assert due.take(lease_s=60, limit=2) == ["m0", "m1"]  # earliest first, at most the limit


def test_a_chunk_due_later_waits_in_redis_and_is_sent_when_due(redis_url: str, redis_client: redis.Redis) -> None:
    clock = FakeClock()
    producer = ChunkProducer.from_settings(settings(redis_url), DueSet(redis_client, clock=clock))
    try:
        producer.send("job1", 0)
        assert broker_messages(redis_client) == [(CHUNK_TASK, ["job1", 0, None])]
        redis_client.delete(CHUNK_QUEUE)

        producer.send("job1", 3, 30.0, 1234.5)
        producer.send("job1", 4, 90.0)
        assert broker_messages(redis_client) == []
        assert redis_client.zcard(DUE_KEY) == 2
        assert producer.publish_due() == 0
        clock.advance(30)
        assert producer.publish_due() == 1
        assert broker_messages(redis_client) == [(CHUNK_TASK, ["job1", 3, 1234.5])]
        clock.advance(60)
        assert producer.publish_due() == 1
        assert broker_messages(redis_client)[1] == (CHUNK_TASK, ["job1", 4, None])
        assert redis_client.zcard(DUE_KEY) == 0
    finally:
        producer.close()


class RefusingBroker:
    """A Celery app whose broker does not answer."""

    def send_task(self, name: str, args: list[object]) -> None:
        raise OperationalError("Error 111 connecting to the broker. Connection refused.")

    def close(self) -> None:
        pass


def test_a_due_task_the_broker_refuses_stays_in_redis_for_the_next_attempt(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    due = DueSet(redis_client, clock=clock)
    producer = ChunkProducer(RefusingBroker(), due)  # type: ignore[arg-type]
    producer.send("job1", 2, 5.0)
    clock.advance(5)
    with pytest.raises(OperationalError):
        producer.publish_due()
    # Still there, leased: the next taker (any worker) sends it once the lease has passed.
    (member, score), = redis_client.zrange(DUE_KEY, 0, -1, withscores=True)
    assert score == pytest.approx(clock() + DUE_LEASE_S)
    assert json.loads(member)["args"] == ["job1", 2, None]


def test_a_producer_without_the_due_set_refuses_a_countdown(redis_url: str) -> None:
    producer = ChunkProducer.from_settings(settings(redis_url))
    try:
        with pytest.raises(ValueError, match="due set"):
            producer.send("job1", 0, 5.0)
    finally:
        producer.close()
