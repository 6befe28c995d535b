"""A worker's metrics: counted from job events and Graph's answers, served on the first free port of a range."""

from __future__ import annotations

import socket

import httpx
import pytest
from celery import signals
from prometheus_client import generate_latest

from config import Settings
from graphclient.client import GraphAnswer
from jobs.events import JobEvent
from jobs.models import Reason, UserResult, UserStatus
from jobs.notify import DeliveryOutcome
from tests.helpers import samples
from worker.celery_app import create_celery_app
from worker.metrics import NotifierMetrics, WorkerMetrics
from worker.producer import CHUNK_TASK, NOTIFY_TASK


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, broker_url="memory://", **values)  # type: ignore[arg-type]


def test_users_and_graph_answers_are_counted() -> None:
    running = {"j:0", "j:1"}
    metrics = WorkerMetrics(chunks_in_flight=lambda: len(running))
    metrics.job_event("j", "contoso", JobEvent.STARTED, {})
    metrics.users_finished("j", "contoso", [
        UserResult(row=2, user="a", status=UserStatus.SUCCEEDED),
        UserResult(row=3, user="b", status=UserStatus.FAILED, reason=Reason.USER_NOT_FOUND),
        UserResult(row=4, user="c", status=UserStatus.FAILED, reason=Reason.USER_NOT_FOUND),
    ])
    observe = metrics.graph_observer("contoso")
    for answer in (GraphAnswer("$batch", 200), GraphAnswer("POST", 200), GraphAnswer("POST", 429, True, 4.0),
                   GraphAnswer("GET", 503, True, None), GraphAnswer("GET", 0)):
        observe(answer)
    got = samples(generate_latest(metrics.registry).decode())
    tenant = ("tenant", "contoso")
    assert got[("bulklicense_users_finished_total", (("reason", ""), ("status", "succeeded"), tenant))] == 1
    assert got[("bulklicense_users_finished_total",
                (("reason", "user_not_found"), ("status", "failed"), tenant))] == 2
    assert got[("bulklicense_job_events_total", (("event", "started"), tenant))] == 1
    assert got[("bulklicense_graph_requests_total", (("method", "POST"), ("status", "200"), tenant))] == 1
    assert got[("bulklicense_graph_requests_total", (("method", "$batch"), ("status", "200"), tenant))] == 1
    assert got[("bulklicense_graph_requests_total", (("method", "GET"), ("status", "0"), tenant))] == 1
    assert got[("bulklicense_graph_throttled_total", (tenant,))] == 2
    assert got[("bulklicense_graph_retry_after_seconds_count", (tenant,))] == 1
    assert got[("bulklicense_graph_retry_after_seconds_sum", (tenant,))] == 4.0
    assert got[("bulklicense_graph_retry_after_seconds_bucket", (("le", "5.0"), tenant))] == 1
    assert got[("bulklicense_chunks_in_flight", ())] == 2
    assert not any(name.startswith("bulklicense_notifications") for name, _ in got)  # the notifier's
    running.clear()
    assert samples(generate_latest(metrics.registry).decode())[("bulklicense_chunks_in_flight", ())] == 0


def test_a_notifications_worker_counts_attempts_and_what_is_pending() -> None:
    pending = [3.0]
    metrics = NotifierMetrics(pending=lambda: pending[0])
    for outcome in (DeliveryOutcome.DELIVERED, DeliveryOutcome.RETRYING, DeliveryOutcome.SKIPPED,
                    DeliveryOutcome.DEFERRED, DeliveryOutcome.DELIVERED):
        metrics.notified(outcome)
    got = samples(generate_latest(metrics.registry).decode())
    assert got[("bulklicense_notifications_total", (("outcome", "delivered"),))] == 2
    assert got[("bulklicense_notifications_total", (("outcome", "deferred"),))] == 1
    assert ("bulklicense_notifications_total", (("outcome", "skipped"),)) not in got
    assert got[("bulklicense_notifications_pending", ())] == 3
    assert not any(name.startswith("bulklicense_chunks") for name, _ in got)  # the chunk worker's


def test_workers_on_one_host_take_consecutive_ports() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        first = taken.getsockname()[1]
        config = settings(metrics_port=first, metrics_port_range=16)
        one, two = WorkerMetrics(), WorkerMetrics()
        server_one, server_two = one.serve(config), two.serve(config)
        try:
            assert server_one is not None and server_two is not None
            assert first < server_one.port < server_two.port < first + 16
            page = httpx.get(f"http://127.0.0.1:{server_two.port}/metrics", timeout=5)
            assert page.status_code == 200 and "bulklicense_chunks_in_flight 0.0" in page.text
        finally:
            for server in (server_one, server_two):
                if server is not None:
                    server.stop()
        assert WorkerMetrics().serve(settings(metrics_port=first, metrics_port_range=1)) is None
    assert WorkerMetrics().serve(settings()) is None  # off unless a port is set


@pytest.mark.parametrize("events", [False, True])
def test_the_worker_app_registers_both_tasks_and_sends_task_events_when_asked(
    events: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each app connects handlers to Celery's process-wide signals: keep these apps' away from later workers.
    for signal in (signals.setup_logging, signals.worker_ready, signals.worker_process_init, signals.worker_shutdown):
        monkeypatch.setattr(signal, "receivers", list(signal.receivers))
    app = create_celery_app(settings(worker_task_events=events))
    assert {CHUNK_TASK, NOTIFY_TASK} <= set(app.tasks)
    assert app.conf.worker_send_task_events is events
