"""`callback_url` at submission: query, JSON body or form field; refused URLs are 422 and leave nothing.

The check's host lookup is bounded: a slow DNS server holds a request a couple of seconds at most,
a few lookups at once per API key, and `/healthz` stays fast meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from config import Settings
from config.settings import parse_webhook_origins
from tests.api.helpers import ALL_KEY, GOOD_CSV, SIM_KEY, Sent, auth
from webhooks.policy import NOT_PUBLIC, CallbackPolicy
from webhooks.resolver import Resolver

PUBLIC = "https://93.184.215.14/hr/bulk-license?token=abc"  # an address literal: no DNS needed
INTERNAL = "http://127.0.0.1:9000/hook"
ALLOWED_ORIGIN = "http://127.0.0.1:9000"
JSON_OPS = [{"user": "ada@contoso.example", "addLicenses": [{"sku": "ENTERPRISEPACK"}], "usageLocation": "US"}]


def hooked_app(settings: Settings, redis_client: redis.Redis, sent: Sent, subscribed_skus: list[dict[str, Any]],
               callbacks: CallbackPolicy | None = None) -> Any:
    """The API with notifications configured: a secret, and http://127.0.0.1:9000 allowed (plain http there)."""
    configured = settings.model_copy(update={"webhook_secret": SecretStr("s3cret-webhook"),
                                             "webhook_allowed_origins": parse_webhook_origins(ALLOWED_ORIGIN)})
    return create_app(configured, redis_client=redis_client,
                      send=lambda job, n, countdown: sent.append((job, n, 0.0)),
                      fetch_skus=lambda tenant: subscribed_skus, ceiling_for=lambda tenant: 20.0, callbacks=callbacks)


@pytest.fixture
def hooked(settings: Settings, redis_client: redis.Redis, sent: Sent,
           subscribed_skus: list[dict[str, Any]]) -> Iterator[TestClient]:
    with TestClient(hooked_app(settings, redis_client, sent, subscribed_skus), raise_server_exceptions=False) as client:
        yield client


def stored_url(redis_client: redis.Redis, job_id: str) -> bytes | None:
    value: bytes | None = redis_client.hget(f"bl:job:{job_id}", "callback_url")
    return value


def post_csv(client: TestClient, params: dict[str, str], key: str = ALL_KEY) -> Any:
    return client.post("/v1/jobs", params={"tenant": "sim", **params}, content=GOOD_CSV.encode(),
                       headers={**auth(key), "Content-Type": "text/csv"})


def test_each_way_of_naming_a_callback_is_stored_with_the_job(hooked: TestClient, redis_client: redis.Redis) -> None:
    by_query = post_csv(hooked, {"callback_url": PUBLIC})
    by_json = hooked.post("/v1/jobs", json={"tenant": "sim", "operations": JSON_OPS, "callback_url": INTERNAL},
                          headers=auth())
    by_form = hooked.post("/v1/jobs", params={"tenant": "sim"}, headers=auth(),
                          data={"callback_url": PUBLIC}, files={"file": ("a.csv", GOOD_CSV.encode(), "text/csv")})
    by_both = hooked.post("/v1/jobs", params={"callback_url": INTERNAL}, headers=auth(),
                          json={"tenant": "sim", "operations": JSON_OPS, "callback_url": INTERNAL})
    none = post_csv(hooked, {})
    for response in (by_query, by_json, by_form, by_both, none):
        assert response.status_code == 202, response.text
    assert [stored_url(redis_client, r.json()["id"]) for r in (by_query, by_json, by_form, by_both, none)] == [
        PUBLIC.encode(), INTERNAL.encode(), PUBLIC.encode(), INTERNAL.encode(), None]


@pytest.mark.parametrize(("url", "why"), [
    ("http://93.184.215.14/hook", NOT_PUBLIC),
    ("https://10.0.0.7/hook", NOT_PUBLIC),
    ("https://127.0.0.2/hook", NOT_PUBLIC),
    ("https://[::1]:8443/hook", NOT_PUBLIC),
    ("https://169.254.169.254/latest/meta-data/", NOT_PUBLIC),
    ("https://localhost/hook", NOT_PUBLIC),
    ("https://does-not-exist.invalid/hook", NOT_PUBLIC),  # no "cannot be resolved": no DNS oracle
    ("https://[fec0::1]/hook", NOT_PUBLIC),
    ("https://192.0.0.8/hook", NOT_PUBLIC),
    ("http://127.0.0.1:9001/hook", NOT_PUBLIC),  # an allowed host, on another port
    ("https://127.0.0.1:9000/hook", NOT_PUBLIC),  # an allowed origin, with another scheme
    ("https://user:pw@93.184.215.14/hook", "may not contain credentials"),
    ("javascript:alert(1)", "must be an https:// URL"),
])
def test_a_refused_url_is_422_naming_the_column_and_nothing_is_created(
    hooked: TestClient, redis_client: redis.Redis, sent: Sent, url: str, why: str
) -> None:
    refusals = [
        post_csv(hooked, {"callback_url": url}),
        hooked.post("/v1/jobs", json={"tenant": "sim", "operations": JSON_OPS, "callback_url": url}, headers=auth()),
        hooked.post("/v1/jobs", params={"tenant": "sim"}, headers=auth(), data={"callback_url": url},
                    files={"file": ("a.csv", GOOD_CSV.encode(), "text/csv")}),
    ]
    for response in refusals:
        assert response.status_code == 422, response.text
        (error,) = response.json()["errors"]
        assert error["column"] == "callback_url" and error["row"] is None
        assert why in error["message"], error
        assert error["value"] == url
    assert redis_client.zcard("bl:jobs") == 0 and sent == []


def test_without_a_webhook_secret_callbacks_are_refused(client: TestClient, sent: Sent) -> None:
    response = post_csv(client, {"callback_url": PUBLIC})
    assert response.status_code == 422
    assert "no webhook secret" in response.json()["errors"][0]["message"]
    assert post_csv(client, {}).status_code == 202


class HangingDns:
    """A resolver that never answers (until released): what a slow or hostile DNS server looks like."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.release.wait(30)
        raise OSError("timed out")


def test_a_slow_dns_server_holds_no_request_long_and_one_key_cannot_take_every_lookup(
    settings: Settings, redis_client: redis.Redis, sent: Sent, subscribed_skus: list[dict[str, Any]]
) -> None:
    dns = HangingDns()
    callbacks = CallbackPolicy(parse_webhook_origins(ALLOWED_ORIGIN),
                               Resolver(dns, timeout_s=0.3, max_in_flight=4, max_per_caller=2))
    # Submissions per key uncapped, so that the lookups' own caps are what is shown.
    uncapped = settings.model_copy(update={"api_submissions_per_key": 0})
    app = hooked_app(uncapped, redis_client, sent, subscribed_skus, callbacks)
    slow = {"callback_url": "https://slow.attacker.example/hook"}
    try:
        with TestClient(app, raise_server_exceptions=False) as client, ThreadPoolExecutor(8) as pool:
            started = time.monotonic()
            answers = list(pool.map(lambda _: post_csv(client, slow, key=SIM_KEY), range(6)))
            took_s = time.monotonic() - started
            statuses = sorted(r.status_code for r in answers)
            # Two lookups for this key at once: those answer 422 after the 0.3 s deadline; the rest are
            # refused at once (503, retry shortly): none waits for the hanging server.
            assert statuses.count(422) >= 2 and set(statuses) <= {422, 503}, statuses
            assert took_s < 3.0
            busy = next(r for r in answers if r.status_code == 503)
            assert busy.headers["Retry-After"] == "2" and busy.json()["errors"][0]["column"] == "callback_url"
            refused = next(r for r in answers if r.status_code == 422)
            assert refused.json()["errors"][0]["message"] == NOT_PUBLIC
            # Another key still has lookups of its own, and the API answers the rest as usual.
            other = post_csv(client, {"callback_url": "https://another.example/hook"}, key=ALL_KEY)
            assert other.status_code == 422
            t = time.monotonic()
            assert client.get("/healthz").status_code == 200 and time.monotonic() - t < 1.0
            assert post_csv(client, {"callback_url": INTERNAL}).status_code == 202  # no lookup needed
    finally:
        dns.release.set()
    assert redis_client.zcard("bl:jobs") == 1


def test_two_different_callbacks_for_one_job_are_refused(hooked: TestClient) -> None:
    both = hooked.post("/v1/jobs", params={"callback_url": PUBLIC}, headers=auth(),
                       json={"tenant": "sim", "operations": JSON_OPS, "callback_url": INTERNAL})
    form_and_query = hooked.post("/v1/jobs", params={"tenant": "sim", "callback_url": PUBLIC}, headers=auth(),
                                 data={"callback_url": INTERNAL},
                                 files={"file": ("a.csv", GOOD_CSV.encode(), "text/csv")})
    for response in (both, form_and_query):
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["column"] == "callback_url"


def test_a_retry_with_another_form_callback_is_another_request(hooked: TestClient) -> None:
    def upload(url: str) -> Any:
        return hooked.post("/v1/jobs", params={"tenant": "sim"}, data={"callback_url": url},
                           headers={**auth(SIM_KEY), "Idempotency-Key": "batch-7"},
                           files={"file": ("a.csv", GOOD_CSV.encode(), "text/csv")})

    first = upload(PUBLIC)
    assert first.status_code == 202, first.text
    assert (upload(PUBLIC).status_code, upload(PUBLIC).json()["id"]) == (200, first.json()["id"])
    assert upload(INTERNAL).status_code == 409
