"""Redis or the broker away is an outage: every route answers 503 + Retry-After, writes nothing, and recovers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from kombu.exceptions import OperationalError

from api.app import api_redis, create_app
from cli.localstack import EmbeddedRedis, free_port
from config import Settings
from jobs.idempotency import IdempotencyStore
from tests.api.helpers import ALL_KEY, GOOD_CSV, Sent, auth, write_tenants

JSON_JOB = {"tenant": "sim", "operations": [{"user": "ada@contoso.example", "addLicenses": [{"sku": "EMS"}]}]}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, with its data kept across a stop and start (append-only file)."""
    server = EmbeddedRedis(data_dir=tmp_path / "redis", appendonly=True)
    (tmp_path / "redis").mkdir()
    with server:
        yield server


def make_settings(tmp_path: Path, redis_url: str, **overrides: Any) -> Settings:
    return Settings(redis_url=redis_url, tenants_file=write_tenants(tmp_path),
                    api_keys=f"admin={ALL_KEY}:*", chunk_size=10, **overrides)  # type: ignore[arg-type]


def make_client(settings: Settings, sent: Sent, subscribed_skus: list[dict[str, Any]], **kwargs: Any) -> TestClient:
    # The API's own Redis client (not an injected one): its retries and timeouts are part of the test.
    app = create_app(settings, fetch_skus=lambda tenant: subscribed_skus, ceiling_for=lambda tenant: 20.0,
                     send=kwargs.pop("send", lambda job, n, countdown: sent.append((job, n, countdown))), **kwargs)
    return TestClient(app, raise_server_exceptions=False)


def every_route(client: TestClient, job_id: str) -> dict[str, Any]:
    """One call of each route, keyed by a label."""
    csv_headers = {**auth(), "Content-Type": "text/csv"}
    return {
        "POST /v1/jobs csv": client.post("/v1/jobs?tenant=sim", content=GOOD_CSV.encode(), headers=csv_headers),
        "POST /v1/jobs json": client.post("/v1/jobs", json=JSON_JOB, headers=auth()),
        "POST /v1/jobs idempotent": client.post("/v1/jobs?tenant=sim", content=GOOD_CSV.encode(),
                                                headers={**csv_headers, "Idempotency-Key": "retry-1"}),
        "GET /v1/jobs": client.get("/v1/jobs", headers=auth()),
        "GET /v1/jobs/{id}": client.get(f"/v1/jobs/{job_id}", headers=auth()),
        "GET /v1/jobs/{id}/results": client.get(f"/v1/jobs/{job_id}/results", headers=auth()),
        "POST /v1/jobs/{id}/cancel": client.post(f"/v1/jobs/{job_id}/cancel", headers=auth()),
        "GET /v1/audit": client.get("/v1/audit", headers=auth()),
        "GET /healthz": client.get("/healthz"),
    }


@pytest.mark.slow
def test_redis_down_is_503_with_retry_after_and_recovers(
    tmp_path: Path, own_redis: EmbeddedRedis, sent: Sent, subscribed_skus: list[dict[str, Any]],
) -> None:
    with make_client(make_settings(tmp_path, own_redis.url), sent, subscribed_skus) as client:
        job = client.post("/v1/jobs?tenant=sim", content=GOOD_CSV.encode(),
                          headers={**auth(), "Content-Type": "text/csv"}).json()
        own_redis.stop()
        for label, response in every_route(client, job["id"]).items():
            assert response.status_code == 503, (label, response.text)
            assert response.headers["retry-after"] == "5", label
            assert response.headers["content-type"] == "application/json", label
            if label != "GET /healthz":
                assert response.json()["detail"].startswith("the job store or the broker is unreachable"), label

        own_redis.start()  # same port, same data: the client reconnects by itself
        after = every_route(client, job["id"])
        assert {label: r.status_code for label, r in after.items()} == {
            "POST /v1/jobs csv": 202, "POST /v1/jobs json": 202, "POST /v1/jobs idempotent": 202,
            "GET /v1/jobs": 200, "GET /v1/jobs/{id}": 200, "GET /v1/jobs/{id}/results": 200,
            "POST /v1/jobs/{id}/cancel": 202, "GET /v1/audit": 200, "GET /healthz": 200,
        }

    # Nothing was half-written during the outage: the three jobs are the one before and the two after.
    client_after = redis.Redis.from_url(own_redis.url)
    try:
        jobs = {m.decode() for m in client_after.zrange("bl:jobs", 0, -1)}
        assert job["id"] in jobs and len(jobs) == 4  # before, then csv, json and idempotent after
        assert sorted(k.decode().split(":")[2] for k in client_after.keys("bl:job:*") if k.count(b":") == 2) \
            == sorted(jobs)
    finally:
        client_after.close()


def test_an_unreachable_broker_is_503_before_anything_is_written(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, sent: Sent, subscribed_skus: list[dict[str, Any]],
) -> None:
    settings = make_settings(tmp_path, redis_url, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    with make_client(settings, sent, subscribed_skus) as client:
        response = client.post("/v1/jobs?tenant=sim", content=GOOD_CSV.encode(),
                               headers={**auth(), "Content-Type": "text/csv"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert client.get("/v1/jobs", headers=auth()).status_code == 200  # reads need no broker
    assert redis_client.keys("bl:job*") == []
    assert sent == []


def test_a_broker_lost_after_commit_leaves_the_chunks_for_the_reaper(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, sent: Sent, subscribed_skus: list[dict[str, Any]],
) -> None:
    def broker_gone(job_id: str, n: int, countdown_s: float) -> None:
        raise OperationalError("Error 111 connecting to broker. Connection refused.")

    with make_client(make_settings(tmp_path, redis_url), sent, subscribed_skus, send=broker_gone) as client:
        body = "user,add\n" + "".join(f"u{i}@contoso.example,EMS\n" for i in range(25))
        response = client.post("/v1/jobs?tenant=sim", content=body.encode(),
                               headers={**auth(), "Content-Type": "text/csv"})
    assert response.status_code == 202  # the job is committed: failing now would invite a duplicate
    live = redis_client.hgetall(f"bl:job:{response.json()['id']}:live")
    assert sorted(live) == [b"0", b"1", b"2"] and all(v.startswith(b"q:") for v in live.values())


def test_redis_lost_mid_submission_leaves_no_job_and_the_key_usable(
    tmp_path: Path, own_redis: EmbeddedRedis, sent: Sent, subscribed_skus: list[dict[str, Any]],
) -> None:
    stopped: list[bool] = []

    def fetch_then_lose_redis(_tenant: str) -> list[dict[str, Any]]:
        if not stopped:  # the first submission has claimed its idempotency key; Redis goes away now
            own_redis.stop()
            stopped.append(True)
        return subscribed_skus

    client = api_redis(own_redis.url)
    store = IdempotencyStore(client, pending_ttl_s=1.0, wait_s=5.0)  # the retry waits out the stale claim
    app = create_app(make_settings(tmp_path, own_redis.url), redis_client=client, idempotency=store,
                     send=lambda job, n, countdown: sent.append((job, n, countdown)),
                     fetch_skus=fetch_then_lose_redis, ceiling_for=lambda tenant: 20.0)
    headers = {**auth(), "Content-Type": "text/csv", "Idempotency-Key": "nightly-1"}
    with TestClient(app, raise_server_exceptions=False) as http:
        lost = http.post("/v1/jobs?tenant=sim", content=GOOD_CSV.encode(), headers=headers)
        assert (lost.status_code, lost.headers["retry-after"]) == (503, "5")
        own_redis.start()
        assert client.keys("bl:job*") == []
        retried = http.post("/v1/jobs?tenant=sim", content=GOOD_CSV.encode(), headers=headers)
        assert retried.status_code == 202, retried.text
        assert http.post("/v1/jobs?tenant=sim", content=GOOD_CSV.encode(), headers=headers).json() == retried.json()
    assert [m.decode() for m in client.zrange("bl:jobs", 0, -1)] == [retried.json()["id"]]
    assert len(sent) == 1
