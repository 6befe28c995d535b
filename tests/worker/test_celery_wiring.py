"""The worker's Celery app, run in-process on an in-memory broker: options, the task by name, the signals.

The API and the scheduler enqueue chunks by task name through a bare producer app; only the worker
registers the task. Nothing but a real worker proves the two agree on the name and the queue, and
that the worker's signals start the per-process runtime (heartbeat, reaper) and stop it again.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery
from celery.apps.worker import Worker as CeleryWorker
from celery.contrib.testing.worker import TestWorkController, start_worker
from celery.platforms import EX_OK
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer

from cli.localstack import EmbeddedRedis
from config import Settings
from jobs.models import Operation, UserStatus
from jobs.store import JobStore
from worker.celery_app import create_celery_app
from worker.producer import CHUNK_QUEUE, CHUNK_TASK, NOTIFY_QUEUE, NOTIFY_TASK, ChunkProducer
from worker.runtime import stop_runtime

UNCONFIGURED_TENANT = "no-such-profile"
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
VISIBILITY_TIMEOUT_S = 7200
# Longer than any wait below: a heartbeat that goes away was deleted by the runtime, not expired.
LEASE_TTL_S = 300
RUNTIME_THREADS = ("bulklicense-heartbeat", "bulklicense-reaper")


class AnnouncingWorker(TestWorkController):  # type: ignore[misc]
    """Celery's embedded test worker, also sending worker_ready when ready, as `celery worker` does."""

    def on_consumer_ready(self, consumer: Consumer) -> None:
        CeleryWorker.on_consumer_ready(self, consumer)  # sends worker_ready
        super().on_consumer_ready(consumer)


@pytest.fixture(scope="module")
def settings(redis_server: EmbeddedRedis) -> Iterator[Settings]:
    """The worker's settings: the session's Redis for jobs, the in-memory broker, no tenant profile."""
    with pytest.MonkeyPatch.context() as patch:  # module scope: the autouse env cleaner has not run yet
        for name in [n for n in os.environ if n.startswith("BULKLICENSE_")]:
            patch.delenv(name)
        yield Settings(_env_file=None, redis_url=redis_server.url, broker_url="memory://",  # type: ignore[call-arg]
                       worker_concurrency=2, visibility_timeout_s=VISIBILITY_TIMEOUT_S, lease_ttl_s=LEASE_TTL_S)


@pytest.fixture(scope="module")
def app(settings: Settings) -> Celery:
    """One worker app for the module: each app connects its handlers to Celery's process-wide signals."""
    return create_celery_app(settings)


def heartbeats(client: redis.Redis) -> list[bytes]:
    """The worker heartbeats in Redis (a runtime writes one while it runs)."""
    return list(client.scan_iter(match="bl:worker:*"))


def pending(store: JobStore, job_id: str) -> int:
    progress = store.progress(job_id)
    assert progress is not None, f"job {job_id} is gone"
    return progress.pending


def runtime_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in RUNTIME_THREADS and t.is_alive()]


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.02)


def test_the_app_delivers_at_least_once_one_message_per_slot(app: Celery, settings: Settings) -> None:
    conf = app.conf
    assert conf.broker_url == "memory://"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options == {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    assert conf.task_default_queue == CHUNK_QUEUE
    assert conf.worker_pool == "threads" and conf.worker_concurrency == settings.worker_concurrency
    assert CHUNK_TASK in app.tasks


def test_notifications_have_a_queue_of_their_own_and_are_acked_when_they_start(app: Celery) -> None:
    # The chunk worker consumes CHUNK_QUEUE only (`bulklicense worker -Q`); a receiver never holds its slots.
    assert [q.name for q in app.conf.task_queues] == [CHUNK_QUEUE, NOTIFY_QUEUE]
    assert app.amqp.router.route({}, NOTIFY_TASK)["queue"].name == NOTIFY_QUEUE
    assert app.amqp.router.route({}, CHUNK_TASK)["queue"].name == CHUNK_QUEUE
    # A lost attempt is sent again from the outbox: no redelivery of the message hours later.
    assert app.tasks[NOTIFY_TASK].acks_late is False and app.tasks[CHUNK_TASK].acks_late is True


def test_a_chunk_sent_by_name_runs_in_a_worker_whose_signals_start_and_stop_the_runtime(
    app: Celery, settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(redis_client, retention_s=settings.retention_s)
    ops = [Operation(row=i + 2, user=f"user{i}@contoso.example", remove=(EMS,)) for i in range(3)]
    store.stage("job1", UNCONFIGURED_TENANT, ops, chunk_size=10)
    assert store.commit("job1", source="csv") == (3, 1)
    assert store.next_chunk("job1") == 0  # dispatched, as the API does before sending it
    assert heartbeats(redis_client) == [] and runtime_threads() == []

    try:
        with start_worker(app, pool="threads", concurrency=settings.worker_concurrency, perform_ping_check=False,
                          WorkController=AnnouncingWorker, shutdown_timeout=30):
            # worker_ready started the runtime: its heartbeat thread writes this worker's heartbeat.
            wait_for(lambda: heartbeats(redis_client), 10, "the runtime's first heartbeat")
            assert sorted(runtime_threads()) == sorted(RUNTIME_THREADS)

            # The API's producer (its own bare app, no task registered) sends chunk 0 by name.
            producer = ChunkProducer.from_settings(settings)
            try:
                producer.send("job1", 0)
            finally:
                producer.close()
            # Only the registered task, run with the worker's runtime, records these users: the tenant
            # has no profile on this worker, so each fails as such.
            wait_for(lambda: pending(store, "job1") == 0, 10, "the chunk task to record its users")
            results = [result for _, result in store.iter_results("job1")]
            assert [(r.user, r.status, r.reason) for r in results if r is not None] == [
                (op.user, UserStatus.FAILED, "tenant_not_configured") for op in ops]
            assert all(f"'{UNCONFIGURED_TENANT}' is not configured on this worker" in (r.graph_message or "")
                       for r in results if r is not None)
            assert len(heartbeats(redis_client)) == 1  # the task reused the runtime worker_ready started

            # A warm shutdown, as SIGTERM asks for one: the worker stops and sends worker_shutdown.
            monkeypatch.setattr(worker_state, "should_stop", EX_OK)
            wait_for(lambda: not heartbeats(redis_client), 30, "worker_shutdown to stop the runtime")
        assert runtime_threads() == []
    finally:
        stop_runtime()  # after a failure above, leave no runtime threads to later tests
