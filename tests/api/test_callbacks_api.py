"""`callback_url` at submission: query, JSON body or form field; refused URLs are 422 and leave nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from config import Settings
from tests.api.helpers import ALL_KEY, GOOD_CSV, SIM_KEY, Sent, auth

PUBLIC = "https://93.184.215.14/hr/bulk-license?token=abc"  # an address literal: no DNS needed
INTERNAL = "http://127.0.0.1:9000/hook"
JSON_OPS = [{"user": "ada@contoso.example", "addLicenses": [{"sku": "ENTERPRISEPACK"}], "usageLocation": "US"}]


@pytest.fixture
def hooked(settings: Settings, redis_client: redis.Redis, sent: Sent,
           subscribed_skus: list[dict[str, Any]]) -> Iterator[TestClient]:
    """The API with notifications configured: a secret, and 127.0.0.1 allowed (plain http included)."""
    configured = settings.model_copy(update={"webhook_secret": SecretStr("s3cret-webhook"),
                                             "webhook_allowed_hosts": frozenset({"127.0.0.1"})})
    app = create_app(configured, redis_client=redis_client, send=lambda job, n, countdown: sent.append((job, n, 0.0)),
                     fetch_skus=lambda tenant: subscribed_skus, ceiling_for=lambda tenant: 20.0)
    with TestClient(app, raise_server_exceptions=False) as client:
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
    ("http://93.184.215.14/hook", "must be an https:// URL"),
    ("https://10.0.0.7/hook", "private address (10.0.0.7)"),
    ("https://127.0.0.2/hook", "loopback address (127.0.0.2)"),
    ("https://[::1]:8443/hook", "loopback address (::1)"),
    ("https://169.254.169.254/latest/meta-data/", "link-local address"),
    ("https://localhost/hook", "loopback address"),
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
    assert "BULKLICENSE_WEBHOOK_SECRET is unset" in response.json()["errors"][0]["message"]
    assert post_csv(client, {}).status_code == 202


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
