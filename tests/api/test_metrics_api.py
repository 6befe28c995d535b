"""`GET /metrics` on the API: jobs by status, queue depth, throttle rates, audit losses; who may scrape;
what a scrape costs Redis; Redis away."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.metrics import PageCache
from cli.localstack import free_port
from config import Settings
from jobs.audit import AuditAction, AuditLog
from jobs.models import JobStatus, UserResult, UserStatus
from jobs.store import JobStore
from tests.api.helpers import Sent, auth, submit_csv
from tests.helpers import samples
from worker.producer import CHUNK_QUEUE, NOTIFY_QUEUE


def local(app: Any, **kwargs: Any) -> TestClient:
    """A client on this host: a loopback peer naming a loopback host, as Prometheus beside the API would."""
    return TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000), **kwargs)


def app_with(settings: Settings, redis_client: redis.Redis, skus: list[dict[str, Any]], **changes: Any) -> Any:
    sent: Sent = Sent()
    return create_app(settings.model_copy(update=changes), redis_client=redis_client,
                      send=lambda job, n, countdown: sent.append((job, n, countdown)),
                      fetch_skus=lambda tenant: skus, ceiling_for=lambda tenant: {"sim": 17.5}.get(tenant))


@pytest.fixture
def skus(subscribed_skus: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return subscribed_skus


def jobs_gauge(text: str) -> dict[tuple[str, str], float]:
    return {(dict(labels)["tenant"], dict(labels)["status"]): value
            for (name, labels), value in samples(text).items() if name == "bulklicense_jobs"}


def test_jobs_by_status_queue_depth_and_rates_are_read_at_each_scrape(
    settings: Settings, redis_client: redis.Redis, skus: list[dict[str, Any]]
) -> None:
    with local(app_with(settings, redis_client, skus, metrics_cache_s=0)) as client:
        scrape_while_jobs_run(client, redis_client)


def scrape_while_jobs_run(client: TestClient, redis_client: redis.Redis) -> None:
    page = client.get("/metrics")  # no API key: a scrape is not a client call (see the token test)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]
    assert jobs_gauge(page.text) == {}  # no tenant is named before it has a job
    assert "bulklicense_throttle_rate_writes_per_second{" not in page.text

    done, queued = submit_csv(client)["id"], submit_csv(client)["id"]
    JobStore(redis_client, retention_s=3600).record_results(done, [
        UserResult(row=r, user=f"u{r}", status=UserStatus.SUCCEEDED) for r in (2, 3, 4)])
    redis_client.rpush(CHUNK_QUEUE, b"a", b"b", b"c")
    redis_client.rpush(NOTIFY_QUEUE, b"n")
    redis_client.hset("unacked", "tag", b"m")
    text = client.get("/metrics").text
    got, gauge = samples(text), jobs_gauge(text)
    assert set(gauge) == {("sim", s.value) for s in JobStatus}  # every status of a tenant with jobs; not "other"
    assert gauge[("sim", "completed")] == 1 and gauge[("sim", "queued")] == 1 and sum(gauge.values()) == 2
    assert queued != done
    assert got[("bulklicense_queue_messages", (("queue", CHUNK_QUEUE),))] == 3
    assert got[("bulklicense_queue_messages", (("queue", NOTIFY_QUEUE),))] == 1
    assert got[("bulklicense_queue_unacked_messages", ())] == 1
    assert got[("bulklicense_throttle_rate_writes_per_second", (("tenant", "sim"),))] == 17.5
    assert ("bulklicense_throttle_rate_writes_per_second", (("tenant", "other"),)) not in got  # no recent job
    assert got[("bulklicense_redis_up", ())] == 1
    assert any(name.startswith("process_") for name, _ in got)


def test_only_the_most_recent_jobs_are_counted(settings: Settings, redis_client: redis.Redis,
                                               skus: list[dict[str, Any]]) -> None:
    with local(app_with(settings, redis_client, skus, metrics_recent_jobs=2, metrics_cache_s=0)) as client:
        for _ in range(3):
            submit_csv(client)
        assert sum(jobs_gauge(client.get("/metrics").text).values()) == 2


def test_a_metrics_token_is_required_when_set(settings: Settings, redis_client: redis.Redis,
                                              skus: list[dict[str, Any]]) -> None:
    app = app_with(settings, redis_client, skus, metrics_token=SecretStr("scrape-token-123"))
    with local(app) as client:  # on this host too
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=auth()).status_code == 401  # an API key is not the token
        assert client.get("/metrics", headers={"Authorization": "Bearer scrape-token-124"}).status_code == 401
        page = client.get("/metrics", headers={"Authorization": "Bearer scrape-token-123"})
        assert page.status_code == 200 and "bulklicense_jobs" in page.text


def test_metrics_can_be_turned_off(settings: Settings, redis_client: redis.Redis,
                                   skus: list[dict[str, Any]]) -> None:
    with local(app_with(settings, redis_client, skus, api_metrics=False)) as client:
        assert client.get("/metrics").status_code == 404


def test_without_a_token_only_this_host_may_scrape(settings: Settings, redis_client: redis.Redis,
                                                   skus: list[dict[str, Any]]) -> None:
    """M5: the page names every tenant with jobs, so without a token it is this host's alone."""
    app = app_with(settings, redis_client, skus)
    with local(app) as here:
        assert here.get("/metrics").status_code == 200
        # A proxy on this host relays requests from elsewhere: they are not this host's.
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            refused = here.get("/metrics", headers={header: "203.0.113.9"})
            assert refused.status_code == 403, header
            assert "BULKLICENSE_METRICS_TOKEN" in refused.json()["detail"]
    with TestClient(app, base_url="http://[::1]:8000", client=("::1", 50000)) as here_v6:
        assert here_v6.get("/metrics").status_code == 200
    with TestClient(app, base_url="http://api.example:8000", client=("203.0.113.9", 50000)) as elsewhere:
        assert elsewhere.get("/metrics").status_code == 403
    # A page elsewhere whose name now resolves to 127.0.0.1 (DNS rebinding) still sends its own host name.
    with TestClient(app, base_url="http://attacker.example:8000", client=("127.0.0.1", 50000)) as rebound:
        assert rebound.get("/metrics").status_code == 403


def test_a_scrape_costs_one_round_trip_for_the_jobs_and_scrapes_in_between_cost_nothing(
    settings: Settings, redis_client: redis.Redis, skus: list[dict[str, Any]],
) -> None:
    with local(app_with(settings, redis_client, skus, quota_key_active_jobs=0, quota_tenant_active_jobs=0)) as client:
        for _ in range(60):
            submit_csv(client)

        def commands_since(before: int) -> int:
            """Commands Redis ran since `before` was read, less that INFO itself."""
            return int(redis_client.info("stats")["total_commands_processed"]) - before - 1

        before = int(redis_client.info("stats")["total_commands_processed"])
        first = client.get("/metrics").text
        # The jobs (one HGETALL each, pipelined), the list, the broker (2 queues, the unacknowledged),
        # the chunks due later, the audit counter; no more.
        assert commands_since(before) <= 60 + 6, commands_since(before)
        before = int(redis_client.info("stats")["total_commands_processed"])
        for _ in range(20):
            assert client.get("/metrics").text == first
        assert commands_since(before) == 0
    assert sum(jobs_gauge(first).values()) == 60


def test_the_page_is_kept_for_a_while_then_collected_again() -> None:
    now = {"t": 100.0}
    renders: list[float] = []

    def render() -> bytes:
        renders.append(now["t"])
        return f"page {len(renders)}".encode()

    cache = PageCache(render, ttl_s=5.0, clock=lambda: now["t"])
    assert cache.get() == b"page 1"
    now["t"] += 4.9
    assert cache.get() == b"page 1"
    now["t"] += 0.1
    assert cache.get() == b"page 2"
    assert renders == [100.0, 105.0]


def test_audit_events_lost_to_the_size_bound_are_counted(settings: Settings, redis_client: redis.Redis,
                                                          skus: list[dict[str, Any]]) -> None:
    log = AuditLog(redis_client, max_events=100, retention_s=3600)
    for n in range(500):
        log.append("sim", "ops", AuditAction.SUBMITTED, details={"n": n})
    with local(app_with(settings, redis_client, skus)) as client:
        got = samples(client.get("/metrics").text)
    lost = 500 - redis_client.xlen(log.stream_key("sim"))
    assert lost > 0
    assert got[("bulklicense_audit_events_trimmed_total", (("tenant", "sim"),))] == lost


@pytest.mark.slow
def test_with_redis_away_a_scrape_still_answers_and_says_so(settings: Settings, skus: list[dict[str, Any]]) -> None:
    nowhere = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    with local(app_with(settings, nowhere, skus)) as client:
        page = client.get("/metrics")
    assert page.status_code == 200
    got = samples(page.text)
    assert got[("bulklicense_redis_up", ())] == 0
    assert not any(name == "bulklicense_jobs" for name, _ in got)
