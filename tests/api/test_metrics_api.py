"""`GET /metrics` on the API: jobs by status, queue depth, throttle rates; the token; Redis away."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from cli.localstack import free_port
from config import Settings
from jobs.models import JobStatus, UserResult, UserStatus
from jobs.store import JobStore
from tests.api.helpers import Sent, auth, submit_csv
from tests.helpers import samples
from worker.producer import QUEUE


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
    with TestClient(app_with(settings, redis_client, skus)) as client:
        scrape_while_jobs_run(client, redis_client)


def scrape_while_jobs_run(client: TestClient, redis_client: redis.Redis) -> None:
    page = client.get("/metrics")  # no API key: a scrape is not a client call (see the token test)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]
    before = jobs_gauge(page.text)
    assert set(before) == {(t, s.value) for t in ("sim", "other") for s in JobStatus}
    assert sum(before.values()) == 0

    done, queued = submit_csv(client)["id"], submit_csv(client)["id"]
    JobStore(redis_client, retention_s=3600).record(done, [
        UserResult(row=r, user=f"u{r}", status=UserStatus.SUCCEEDED) for r in (2, 3, 4)])
    redis_client.rpush(QUEUE, b"a", b"b", b"c")
    redis_client.hset("unacked", "tag", b"m")
    text = client.get("/metrics").text
    got, gauge = samples(text), jobs_gauge(text)
    assert gauge[("sim", "completed")] == 1 and gauge[("sim", "queued")] == 1 and sum(gauge.values()) == 2
    assert queued != done
    assert got[("bulklicense_queue_messages", (("queue", QUEUE),))] == 3
    assert got[("bulklicense_queue_unacked_messages", ())] == 1
    assert got[("bulklicense_throttle_rate_writes_per_second", (("tenant", "sim"),))] == 17.5
    assert ("bulklicense_throttle_rate_writes_per_second", (("tenant", "other"),)) not in got  # no rate limit
    assert got[("bulklicense_redis_up", ())] == 1
    assert any(name.startswith("process_") for name, _ in got)


def test_only_the_most_recent_jobs_are_counted(settings: Settings, redis_client: redis.Redis,
                                               skus: list[dict[str, Any]]) -> None:
    with TestClient(app_with(settings, redis_client, skus, metrics_recent_jobs=2)) as client:
        for _ in range(3):
            submit_csv(client)
        assert sum(jobs_gauge(client.get("/metrics").text).values()) == 2


def test_a_metrics_token_is_required_when_set(settings: Settings, redis_client: redis.Redis,
                                              skus: list[dict[str, Any]]) -> None:
    app = app_with(settings, redis_client, skus, metrics_token=SecretStr("scrape-token-123"))
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=auth()).status_code == 401  # an API key is not the token
        assert client.get("/metrics", headers={"Authorization": "Bearer scrape-token-124"}).status_code == 401
        page = client.get("/metrics", headers={"Authorization": "Bearer scrape-token-123"})
        assert page.status_code == 200 and "bulklicense_jobs" in page.text


def test_metrics_can_be_turned_off(settings: Settings, redis_client: redis.Redis,
                                   skus: list[dict[str, Any]]) -> None:
    with TestClient(app_with(settings, redis_client, skus, api_metrics=False)) as client:
        assert client.get("/metrics").status_code == 404


@pytest.mark.slow
def test_with_redis_away_a_scrape_still_answers_and_says_so(settings: Settings, skus: list[dict[str, Any]]) -> None:
    nowhere = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    with TestClient(app_with(settings, nowhere, skus)) as client:
        page = client.get("/metrics")
    assert page.status_code == 200
    got = samples(page.text)
    assert got[("bulklicense_redis_up", ())] == 0
    assert not any(name == "bulklicense_jobs" for name, _ in got)
