"""`Idempotency-Key` on POST /v1/jobs: a retried submission returns the first job, never a second one."""

from __future__ import annotations

import json
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
from config import Settings
from jobs.idempotency import Claim, IdempotencyStore
from tests.api.helpers import GOOD_CSV, OTHER_KEY, SIM_KEY, Sent, auth

WAIT_S = 10.0


def post_csv(client: TestClient, idempotency_key: str | bytes | None, body: str = GOOD_CSV, key: str = SIM_KEY,
             tenant: str = "sim") -> httpx.Response:
    headers: dict[str, Any] = {**auth(key), "Content-Type": "text/csv"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return client.post(f"/v1/jobs?tenant={tenant}", content=body.encode(), headers=headers)


def job_ids(redis_client: redis.Redis) -> list[bytes]:
    return list(redis_client.zrange("bl:jobs", 0, -1))


def test_a_retry_returns_the_first_job(client: TestClient, redis_client: redis.Redis, sent: Sent) -> None:
    first = post_csv(client, "order-42")
    assert first.status_code == 202, first.text
    again = post_csv(client, "order-42")
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"] == f"/v1/jobs/{first.json()['id']}"
    assert job_ids(redis_client) == [first.json()["id"].encode()]
    assert len(sent) == 1
    # The same file as multipart is the same request (the body's bytes, tenant and options match).
    as_file = client.post("/v1/jobs?tenant=sim", headers={**auth(SIM_KEY), "Idempotency-Key": "order-42"},
                          files={"file": ("onboarding.csv", GOOD_CSV.encode(), "text/csv")})
    assert (as_file.status_code, as_file.json()["id"]) == (200, first.json()["id"])


def test_the_same_key_for_another_request_is_409(client: TestClient, redis_client: redis.Redis) -> None:
    first = post_csv(client, "order-42")
    assert first.status_code == 202
    other_body = post_csv(client, "order-42", body=GOOD_CSV.replace("GB", "FR"))
    assert other_body.status_code == 409
    assert "already used for a different request" in other_body.json()["detail"]
    other_tenant = post_csv(client, "order-42", key=OTHER_KEY, tenant="other")
    assert other_tenant.status_code == 202  # another API key: its own key space
    as_json = client.post("/v1/jobs", headers={**auth(SIM_KEY), "Idempotency-Key": "order-42"},
                          json={"tenant": "sim", "operations": [{"user": "a@contoso.example",
                                                                 "addLicenses": [{"sku": "EMS"}]}]})
    assert as_json.status_code == 409
    assert len(job_ids(redis_client)) == 2


def test_a_refused_submission_does_not_use_up_the_key(client: TestClient, redis_client: redis.Redis) -> None:
    refused = post_csv(client, "order-43", body="user,add\nnobody,NO_SUCH_SKU\n")
    assert refused.status_code == 422
    accepted = post_csv(client, "order-43")
    assert accepted.status_code == 202, accepted.text
    assert post_csv(client, "order-43").json()["id"] == accepted.json()["id"]


@pytest.mark.parametrize("bad_key", ["", "x" * 201, "caf\u00e9".encode("latin-1"), b"del\x7f"])
def test_malformed_keys_are_422(client: TestClient, redis_client: redis.Redis, bad_key: str | bytes) -> None:
    response = post_csv(client, bad_key)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["column"] == "header.Idempotency-Key"
    assert job_ids(redis_client) == []


class SignallingStore(IdempotencyStore):
    """An idempotency store that sets `waiting` when a request finds the key held by another."""

    def __init__(self, client: redis.Redis, waiting: threading.Event) -> None:
        super().__init__(client)
        self.waiting = waiting

    def try_claim(self, scope: str, key: str) -> Claim | None:
        claim = super().try_claim(scope, key)
        if claim is None:
            self.waiting.set()
        return claim


@pytest.fixture
def gated(settings: Settings, redis_client: redis.Redis, sent: Sent,
          subscribed_skus: list[dict[str, Any]]) -> Iterator[tuple[TestClient, threading.Event, threading.Event]]:
    """An app whose first submission stops inside (reading the SKU catalog) until released; its
    idempotency store signals when a second request starts waiting for the first."""
    inside, release = threading.Event(), threading.Event()

    def fetch_skus(_tenant: str) -> list[dict[str, Any]]:
        inside.set()
        assert release.wait(WAIT_S)
        return subscribed_skus

    # The second request is waiting: let the first one finish.
    app = create_app(settings, redis_client=redis_client,
                     send=lambda job, n, countdown: sent.append((job, n, countdown)), fetch_skus=fetch_skus,
                     ceiling_for=lambda tenant: 20.0, idempotency=SignallingStore(redis_client, release))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, inside, release


def test_concurrent_identical_submissions_make_one_job(
    gated: tuple[TestClient, threading.Event, threading.Event], redis_client: redis.Redis, sent: Sent,
) -> None:
    client, inside, _ = gated
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(post_csv, client, "order-44")
        assert inside.wait(WAIT_S)  # the first request holds the key and is mid-submission
        second = pool.submit(post_csv, client, "order-44")
        responses = [first.result(WAIT_S * 2), second.result(WAIT_S * 2)]
    assert sorted(r.status_code for r in responses) == [200, 202]
    assert responses[0].json() == responses[1].json()
    assert job_ids(redis_client) == [responses[0].json()["id"].encode()]
    assert len(sent) == 1


def test_a_request_waiting_too_long_for_the_first_is_409_in_progress(
    settings: Settings, redis_client: redis.Redis, sent: Sent, subscribed_skus: list[dict[str, Any]],
) -> None:
    inside, answered = threading.Event(), threading.Event()

    def fetch_skus(_tenant: str) -> list[dict[str, Any]]:
        inside.set()
        assert answered.wait(WAIT_S)  # the first request finishes only once the second was answered
        return subscribed_skus

    app = create_app(settings, redis_client=redis_client, send=lambda job, n, countdown: None,
                     fetch_skus=fetch_skus, ceiling_for=lambda tenant: 20.0,
                     idempotency=IdempotencyStore(redis_client, wait_s=0.2))
    with TestClient(app) as client, ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(post_csv, client, "order-45")
        assert inside.wait(WAIT_S)
        busy = post_csv(client, "order-45")
        answered.set()
        assert first.result(WAIT_S).status_code == 202
    assert busy.status_code == 409
    assert busy.headers["retry-after"] == "2"
    assert "still being processed" in json.loads(busy.text)["detail"]


@pytest.mark.slow
def test_a_long_submission_keeps_its_claim(
    settings: Settings, redis_client: redis.Redis, subscribed_skus: list[dict[str, Any]],
) -> None:
    """The claim lapses after 1 s unless renewed; the first submission takes 3 s and still holds it."""
    def slow_fetch(_tenant: str) -> list[dict[str, Any]]:
        time.sleep(3.0)
        return subscribed_skus

    store = IdempotencyStore(redis_client, pending_ttl_s=1.0, wait_s=0.0)
    app = create_app(settings, redis_client=redis_client, send=lambda job, n, countdown: None,
                     fetch_skus=slow_fetch, ceiling_for=lambda tenant: 20.0, idempotency=store)
    with TestClient(app) as client, ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(post_csv, client, "order-46")
        time.sleep(2.0)  # twice the claim's lifetime
        assert post_csv(client, "order-46").status_code == 409  # still held: in progress
        assert first.result(WAIT_S).status_code == 202
    assert len(job_ids(redis_client)) == 1
