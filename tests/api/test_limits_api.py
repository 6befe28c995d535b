"""Limits that keep one client from hurting others: body size and pace, form fields, waiting requests, the
thread pool, concurrent submissions, progress streams and quotas."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.routes.events import Pacing, pacing
from config import Settings
from jobs.idempotency import IdempotencyStore
from jobs.models import UserStatus
from tests.api.helpers import ALL_KEY, GOOD_CSV, JOB_CSV, OUTCOMES, SIM_KEY, Sent, auth, finish, served

BOUNDARY = "b0undary"
WAIT_S = 10.0


def app_with(settings: Settings, redis_client: redis.Redis, skus: list[dict[str, Any]], sent: Sent | None = None,
             *, fetch_skus: Any = None, ceiling_for: Any = None, idempotency: IdempotencyStore | None = None,
             **overrides: Any) -> Any:
    return create_app(settings.model_copy(update=overrides), redis_client=redis_client,
                      send=lambda job, n, countdown: (sent if sent is not None else []).append((job, n, countdown)),
                      fetch_skus=fetch_skus or (lambda tenant: skus), ceiling_for=ceiling_for or (lambda tenant: 20.0),
                      idempotency=idempotency)


def raw_request(url: str, head: str, chunks: Iterator[bytes], *, read_timeout_s: float) -> bytes:
    """Send a request's head and body chunks on a plain socket, leave it open, and return what the server answers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout_s) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed before the body was all sent
        try:
            return sock.recv(65536)
        except TimeoutError:
            return b""


def chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_a_form_field_longer_than_4_kb_is_413(client: TestClient, redis_client: redis.Redis) -> None:
    response = client.post("/v1/jobs?tenant=sim", headers=auth(),
                           files={"file": ("a.csv", GOOD_CSV.encode(), "text/csv")},
                           data={"callback_url": "https://hooks.example/" + "a" * 5000})
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == "the form field 'callback_url' is longer than 4 KB, the limit for a form field"
    assert redis_client.keys("bl:job:*") == []


def test_a_chunked_multipart_upload_is_refused_while_it_streams(api_url: str, redis_client: redis.Redis) -> None:
    """3 MB of a file part (the limit is 2 MB) sent chunked, then nothing: the 413 comes before the body ends."""
    head = (f"POST /v1/jobs?tenant=sim HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ALL_KEY}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n\r\n")
    part = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
            "Content-Type: text/csv\r\n\r\nuser,usage_location\r\n").encode()
    body = [chunked(part)] + [chunked(b"#" * 65536)] * 48  # and never the closing boundary
    answer = raw_request(api_url, head, iter(body), read_timeout_s=10)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"the upload is larger than 2 MB" in answer
    assert redis_client.keys("bl:job:*") == []


def test_a_body_that_trickles_in_is_408(settings: Settings, redis_client: redis.Redis,
                                        subscribed_skus: list[dict[str, Any]]) -> None:
    app = app_with(settings, redis_client, subscribed_skus, api_body_timeout_s=1.0, api_body_min_rate_bytes_s=1024)

    def trickle() -> Iterator[bytes]:
        yield b"user,usage_location\n"
        for _ in range(20):
            time.sleep(0.25)
            yield b"u"

    with served(app) as url:
        head = (f"POST /v1/jobs?tenant=sim HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ALL_KEY}\r\n"
                "Content-Type: text/csv\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        answer = raw_request(url, head, trickle(), read_timeout_s=10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"arrived too slowly" in answer
    assert time.monotonic() - started < 8  # the trickle alone takes 5 s: answered while it went on
    assert redis_client.keys("bl:job:*") == []


def test_healthz_answers_while_every_pool_thread_is_busy(settings: Settings, redis_client: redis.Redis,
                                                         subscribed_skus: list[dict[str, Any]]) -> None:
    """50 progress reads stuck in the shared pool (40 threads): /healthz and authentication still answer."""
    stuck, release = threading.Semaphore(0), threading.Event()

    def ceiling_for(_tenant: str) -> float:
        stuck.release()
        assert release.wait(WAIT_S * 3)
        return 20.0

    app = app_with(settings, redis_client, subscribed_skus, ceiling_for=ceiling_for)
    with served(app) as url, ThreadPoolExecutor(max_workers=50) as pool, \
            httpx.Client(base_url=url, headers=auth(), timeout=30) as api:
        job_id = api.post("/v1/jobs?tenant=sim", content=GOOD_CSV.encode(),
                          headers={"Content-Type": "text/csv"}).json()["id"]
        reads = [pool.submit(api.get, f"/v1/jobs/{job_id}") for _ in range(50)]
        for _ in range(40):  # the pool's every thread holds a read
            assert stuck.acquire(timeout=WAIT_S)
        try:
            started = time.monotonic()
            health = httpx.get(f"{url}/healthz", timeout=5)
            elapsed = time.monotonic() - started
            unauthorized = httpx.get(f"{url}/v1/jobs", timeout=5)
        finally:
            release.set()
        assert all(r.result(WAIT_S * 3).status_code == 200 for r in reads)
    assert (health.status_code, health.json()) == (200, {"status": "ok", "redis": "ok"})
    assert elapsed < 1.0
    assert unauthorized.status_code == 401  # the key check needs no thread either


@pytest.fixture
def gated(settings: Settings, redis_client: redis.Redis, sent: Sent,
          subscribed_skus: list[dict[str, Any]]) -> Iterator[tuple[Any, threading.Event, threading.Event]]:
    """An app (settings overridable) whose submissions stop inside (reading the SKU catalog) until released."""
    inside, release = threading.Event(), threading.Event()

    def fetch_skus(_tenant: str) -> list[dict[str, Any]]:
        inside.set()
        assert release.wait(WAIT_S)
        return subscribed_skus

    def build(**overrides: Any) -> Any:
        return app_with(settings, redis_client, subscribed_skus, sent, fetch_skus=fetch_skus, **overrides)

    yield build, inside, release
    release.set()


def post_csv(client: TestClient, key: str = SIM_KEY, idempotency_key: str | None = None,
             body: str = GOOD_CSV) -> httpx.Response:
    headers = {**auth(key), "Content-Type": "text/csv", **({"Idempotency-Key": idempotency_key} if idempotency_key
                                                           else {})}
    return client.post("/v1/jobs?tenant=sim", content=body.encode(), headers=headers)


def test_only_a_few_requests_wait_on_one_idempotency_key(gated: Any) -> None:
    """The first request holds the key; four wait for it (awaiting, no thread); the fifth is told at once."""
    build, inside, release = gated
    with TestClient(build()) as client, ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(post_csv, client, idempotency_key="order-1")
        assert inside.wait(WAIT_S)
        waiters = [pool.submit(post_csv, client, idempotency_key="order-1") for _ in range(4)]
        time.sleep(0.5)  # they are waiting
        started = time.monotonic()
        fifth = post_csv(client, idempotency_key="order-1")
        elapsed = time.monotonic() - started
        release.set()
        answers = [first.result(WAIT_S)] + [w.result(WAIT_S) for w in waiters]
    assert fifth.status_code == 409
    assert fifth.headers["retry-after"] == "2"
    assert elapsed < 2.0
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 202]


def test_one_key_may_have_a_few_submissions_in_progress(gated: Any) -> None:
    build, inside, release = gated
    with TestClient(build(api_submissions_per_key=1)) as client, ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(post_csv, client)
        assert inside.wait(WAIT_S)
        second = post_csv(client)
        other_key = pool.submit(post_csv, client, ALL_KEY)
        release.set()
        assert first.result(WAIT_S).status_code == 202
        assert other_key.result(WAIT_S).status_code == 202
    assert second.status_code == 429
    assert second.headers["retry-after"] == "5"
    assert {k: second.json()[k] for k in ("quota", "in_use", "limit")} == {
        "quota": "key_concurrent_submissions", "in_use": 1, "limit": 1}


def test_quotas_on_active_jobs_and_held_rows_are_429(settings: Settings, redis_client: redis.Redis,
                                                     subscribed_skus: list[dict[str, Any]]) -> None:
    app = app_with(settings, redis_client, subscribed_skus, quota_key_active_jobs=2, quota_tenant_rows=10)
    with TestClient(app) as client:
        jobs = [post_csv(client, body=JOB_CSV).json()["id"] for _ in range(2)]
        refused = post_csv(client, body=JOB_CSV)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "60"
        body = refused.json()
        assert {k: body[k] for k in ("quota", "in_use", "limit")} == {"quota": "key_active_jobs", "in_use": 2,
                                                                        "limit": 2}
        assert body["detail"].startswith("quota key_active_jobs reached: 2 of 2 jobs at once in use")
        # Another key of the tenant is held by the tenant's rows: 8 held, 4 more asked, 10 allowed.
        by_other = post_csv(client, key=ALL_KEY, body=JOB_CSV)
        assert (by_other.status_code, by_other.json()["quota"], by_other.json()["requested"]) == (429, "tenant_rows", 4)
        finish(redis_client, jobs[0], OUTCOMES)  # a job that ends gives its share back by itself
        assert post_csv(client, body=JOB_CSV).status_code == 202
    assert len(redis_client.zrange("bl:jobs", 0, -1)) == 3


def test_a_json_submission_over_quota_is_429_after_its_tenant_is_read(client: TestClient, settings: Settings,
                                                                       redis_client: redis.Redis,
                                                                       subscribed_skus: list[dict[str, Any]]) -> None:
    app = app_with(settings, redis_client, subscribed_skus, quota_tenant_active_jobs=1)
    body = {"tenant": "sim", "operations": [{"user": "ada@contoso.example", "usageLocation": "GB"}]}
    with TestClient(app) as api:
        assert api.post("/v1/jobs", json=body, headers=auth()).status_code == 202
        refused = api.post("/v1/jobs", json=body, headers=auth())
    assert (refused.status_code, refused.json()["quota"]) == (429, "tenant_active_jobs")


def test_one_key_may_have_a_few_progress_streams_open(settings: Settings, redis_client: redis.Redis,
                                                      subscribed_skus: list[dict[str, Any]]) -> None:
    app = app_with(settings, redis_client, subscribed_skus, api_event_streams_per_key=1)
    app.dependency_overrides[pacing] = lambda: Pacing(poll_s=0.05, keepalive_s=60.0, max_stream_s=1.0)
    with TestClient(app) as client:
        job_id = post_csv(client, key=ALL_KEY).json()["id"]
        with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth()) as first:
            assert next(first.iter_lines()).startswith("retry:")
            second = client.get(f"/v1/jobs/{job_id}/events", headers=auth())
            other_key = client.get(f"/v1/jobs/{job_id}/events", headers=auth(SIM_KEY))
        assert second.status_code == 429
        assert second.json()["quota"] == "key_event_streams"
        assert other_key.status_code == 200
        deadline = time.monotonic() + WAIT_S  # the first stream ends once the server sees its client gone
        while (again := client.get(f"/v1/jobs/{job_id}/events", headers=auth())).status_code == 429:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert again.status_code == 200


def test_the_run_of_a_dry_run_counts_against_the_quotas(settings: Settings, redis_client: redis.Redis,
                                                        subscribed_skus: list[dict[str, Any]]) -> None:
    """A finished dry run's rows still count (for the hold); its run would hold as many again."""
    app = app_with(settings, redis_client, subscribed_skus, quota_key_rows=7)
    with TestClient(app) as client:
        planned = client.post("/v1/jobs?tenant=sim&dry_run=true", content=JOB_CSV.encode(),
                              headers={**auth(), "Content-Type": "text/csv"}).json()["id"]
        finish(redis_client, planned, {u: (UserStatus.WOULD_CHANGE, b, None) for u, (_, b, _) in OUTCOMES.items()})
        refused = client.post(f"/v1/jobs/{planned}/run", headers=auth())
    assert refused.status_code == 429
    assert {k: refused.json()[k] for k in ("quota", "in_use", "limit", "requested")} == {
        "quota": "key_rows", "in_use": 4, "limit": 7, "requested": 4}
    assert redis_client.zcard("bl:jobs") == 1
    assert redis_client.hget(f"bl:job:{planned}", "run_as") is None
