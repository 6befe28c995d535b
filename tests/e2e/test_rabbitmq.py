"""RabbitMQ as the broker, on a private node: quorum queues, long waits that hold no message, the delivery limit.

1. A 429 with `Retry-After: 300` (scaled to 6 s) while the broker is RabbitMQ: the chunk waits in
   Redis's due set, not as a message held by the worker (RabbitMQ would cancel a consumer holding a
   message past its consumer_timeout); the task queue is a quorum queue with the delivery limit and
   the dead-letter route; the API's metrics read the queue depths over AMQP.
2. A chunk message rejected until it reaches its delivery limit is dead-lettered, and the chunk
   still finishes: the reaper sends it again from its state in Redis.
3. A RabbitMQ that does not answer is a 503 before a submission writes anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from kombu import Connection

from api.app import create_app
from cli.localstack import free_port
from config import Settings
from jobs.due import DUE_KEY
from tests.e2e.rabbitmq import PrivateRabbitMQ
from tests.e2e.stack import API_KEY, Stack, free_users, wait_for
from tests.helpers import samples
from worker.queues import CHUNK_QUEUE, CHUNK_TASK, DEAD_LETTER_QUEUE, queue_depths, task_queues

# Each runs in 5 to 15 s once the session's RabbitMQ node is up.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TIME_SCALE = 0.02
RETRY_AFTER_S = 300.0
SCALED_WAIT_S = RETRY_AFTER_S * TIME_SCALE  # 6 s
METRICS_TOKEN = "metrics-token-for-the-scrape"


def rows_for(users: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"user": u["userPrincipalName"], "add": "POWER_BI_PRO"} for u in users]


@pytest.fixture
def wait_stack(tmp_path: Path, rabbitmq: PrivateRabbitMQ) -> Iterator[Stack]:
    env = {"BULKLICENSE_TIME_SCALE": str(TIME_SCALE), "BULKLICENSE_MAX_INLINE_WAIT_S": "2",
           "BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05"}
    s = Stack(tmp_path, sim_args=["--users", "60", "--seed", "5", "--latency-ms", "5"], env=env,
              broker_url=rabbitmq.fresh_vhost_url())
    try:
        s.start(workers=0)
        s.start_worker(concurrency=1)
        yield s
    finally:
        s.stop()


def test_a_long_retry_after_waits_in_redis_and_holds_no_rabbitmq_message(
        wait_stack: Stack, rabbitmq: PrivateRabbitMQ) -> None:
    stack = wait_stack
    assert stack.broker_url is not None
    users = free_users(stack, 4)
    throttled = users[1]["userPrincipalName"]
    with stack.control() as control:
        control.post("/reset")
        r = control.post("/config", json={"force_429": {"count": 1, "retry_after_s": RETRY_AFTER_S,
                                                        "user": throttled}})
        assert r.status_code == 200, r.text
    job_id = stack.submit_csv(rows_for(users))["id"]
    with stack.api() as api:
        wait_for(lambda: api.get(f"/v1/jobs/{job_id}").json()["pending"] == 1, 30, "the first round", stack)
    seen_at = time.monotonic()

    # While the throttled user waits out its Retry-After, its chunk is in Redis, due when the wait ends...
    with stack.redis_client() as r:
        wait_for(lambda: r.zcard(DUE_KEY) == 1, 5, "the hand-back in the due set", stack)
        (member, due_at), = r.zrange(DUE_KEY, 0, -1, withscores=True)
    entry = json.loads(member)
    assert (entry["task"], entry["args"][:2]) == (CHUNK_TASK, [job_id, 0])
    assert due_at - time.time() > SCALED_WAIT_S / 2
    # ... and RabbitMQ holds no message for it: none ready, none delivered and unacknowledged.
    time.sleep(1.0)  # the node's queue statistics are at most 0.5 s old
    queues = rabbitmq.queues(stack.broker_url)
    assert time.monotonic() - seen_at < SCALED_WAIT_S - 1, "the check ran after the wait had ended"
    task_queue = queues[CHUNK_QUEUE]
    assert (task_queue["messages_ready"], task_queue["messages_unacknowledged"]) == (0, 0), task_queue
    arguments = {name: value for name, _, value in task_queue["arguments"]}
    assert task_queue["type"] == "quorum"
    assert arguments == {"x-queue-type": "quorum", "x-delivery-limit": 10,
                         "x-dead-letter-exchange": DEAD_LETTER_QUEUE, "x-dead-letter-routing-key": DEAD_LETTER_QUEUE}
    assert queues[DEAD_LETTER_QUEUE]["type"] == "quorum"  # declared by the worker at start
    # The API reads the queues over AMQP, and the due set from Redis.
    with stack.api() as api:
        scraped = samples(api.get("/metrics").text)
    assert scraped[("bulklicense_queue_messages", (("queue", CHUNK_QUEUE),))] == 0
    assert scraped[("bulklicense_queue_messages", (("queue", DEAD_LETTER_QUEUE),))] == 0
    assert scraped[("bulklicense_delayed_tasks", ())] == 1
    assert scraped[("bulklicense_redis_up", ())] == 1
    assert not any(name == "bulklicense_queue_unacked_messages" for name, _ in scraped)

    job = stack.wait_job(job_id, timeout_s=60)
    assert (job["status"], job["succeeded"]) == ("completed", 4), job
    with stack.control() as control:
        writes = [w for w in control.get("/writes").json()["value"] if w["user"] == throttled]
    assert [w["status"] for w in writes] == [429, 200], writes
    assert writes[1]["ts"] - writes[0]["ts"] >= SCALED_WAIT_S * 0.95
    with stack.redis_client() as r:
        assert r.zcard(DUE_KEY) == 0
    print(f"\n[rabbitmq] throttled user retried {writes[1]['ts'] - writes[0]['ts']:.2f}s after its 429 "
          f"(scaled Retry-After {SCALED_WAIT_S:.1f}s); no message held meanwhile")


@pytest.fixture
def limit_stack(tmp_path: Path, rabbitmq: PrivateRabbitMQ) -> Iterator[Stack]:
    env = {"BULKLICENSE_BROKER_DELIVERY_LIMIT": "2", "BULKLICENSE_REQUEUE_QUEUED_AFTER_S": "3",
           "BULKLICENSE_REAPER_INTERVAL_S": "1", "BULKLICENSE_HEARTBEAT_INTERVAL_S": "1",
           "BULKLICENSE_LEASE_TTL_S": "3"}
    s = Stack(tmp_path, sim_args=["--users", "60", "--seed", "6", "--latency-ms", "5"], env=env,
              broker_url=rabbitmq.fresh_vhost_url())
    try:
        yield s.start(workers=0)
    finally:
        s.stop()


def test_a_message_at_its_delivery_limit_is_dead_lettered_and_its_chunk_still_finishes(limit_stack: Stack) -> None:
    stack = limit_stack
    assert stack.broker_url is not None
    settings = Settings(_env_file=None, broker_url=stack.broker_url, broker_delivery_limit=2)  # type: ignore[call-arg]
    # A worker starts (it declares the dead-letter queue) and stops again: no consumer now.
    worker = stack.start_worker()
    wait_for(lambda: " ready." in stack.worker_logs(), 30, "the worker to be ready", stack)
    worker.terminate()
    worker.wait(timeout=30)

    users = free_users(stack, 5)
    job_id = stack.submit_csv(rows_for(users))["id"]  # one chunk: one message on the quorum queue
    deliveries = 0
    with Connection(stack.broker_url) as connection:
        queue = task_queues(settings)[0](connection.default_channel)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            message = queue.get(no_ack=False)
            if message is None:
                if queue_depths(connection, (DEAD_LETTER_QUEUE,))[DEAD_LETTER_QUEUE] == 1:
                    break
                time.sleep(0.1)
                continue
            assert message.headers["task"] == CHUNK_TASK
            deliveries += 1
            message.reject(requeue=True)  # as a worker dying with it would: back on the queue
        depths = queue_depths(connection, (CHUNK_QUEUE, DEAD_LETTER_QUEUE))
    # Delivered once and returned twice more (the limit), then moved aside instead of looping.
    assert deliveries == 3, deliveries
    assert depths == {CHUNK_QUEUE: 0, DEAD_LETTER_QUEUE: 1}, depths

    # The chunk is still unfinished in Redis: a worker's reaper sends it again, and every user ends.
    started = time.monotonic()
    stack.start_worker()
    job = stack.wait_job(job_id, timeout_s=60)
    assert (job["status"], job["succeeded"], job["total"]) == ("completed", 5, 5), job
    assert "requeueing chunk 0 of job" in stack.worker_logs()
    print(f"\n[rabbitmq] chunk message dead-lettered after {deliveries} deliveries; "
          f"the reaper's new message finished the job {time.monotonic() - started:.1f}s after a worker started")


def test_an_unreachable_rabbitmq_is_503_before_anything_is_written(
        tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> None:
    tenants = tmp_path / "tenants.toml"
    tenants.write_text('[tenants.sim]\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\n')
    settings = Settings(_env_file=None, redis_url=redis_url, tenants_file=tenants,  # type: ignore[call-arg]
                        api_keys=f"{API_KEY}:*", broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}//",
                        metrics_token=METRICS_TOKEN)
    app = create_app(settings, fetch_skus=lambda tenant: [], ceiling_for=lambda tenant: None)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/jobs?tenant=sim", content=b"user,add\nada@contoso.example,EMS\n",
                               headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "text/csv"})
        assert (response.status_code, response.headers.get("retry-after")) == (503, "5"), response.text
        page = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    assert redis_client.keys("bl:job*") == []
    # The metrics say the broker did not answer, instead of failing the scrape.
    assert samples(page)[("bulklicense_redis_up", ())] == 0
