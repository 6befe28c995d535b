"""The scaled time base shrinks Retry-After at the HTTP edge, in headers and in $batch items."""

from __future__ import annotations

import json

import httpx

from graphclient.timescale import ScaledRetryAfterTransport


def handler(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/$batch"):
        body = {"responses": [
            {"id": "1", "status": 429, "headers": {"Retry-After": "300"}, "body": {}},
            {"id": "2", "status": 200, "headers": {}, "body": {}},
        ]}
        return httpx.Response(200, json=body)
    return httpx.Response(429, headers={"Retry-After": "120"}, json={"error": {"code": "TooManyRequests"}})


def test_retry_after_is_scaled_in_headers_and_batch_items() -> None:
    client = httpx.Client(transport=ScaledRetryAfterTransport(httpx.MockTransport(handler), 0.01))
    single = client.post("https://graph.test/v1.0/users/x/assignLicense")
    assert single.status_code == 429
    assert float(single.headers["retry-after"]) == 1.2
    assert single.json() == {"error": {"code": "TooManyRequests"}}
    batch = client.post("https://graph.test/v1.0/$batch")
    items = {i["id"]: i for i in json.loads(batch.content)["responses"]}
    assert float(items["1"]["headers"]["Retry-After"]) == 3.0
    assert items["2"]["status"] == 200


def test_http_dates_and_malformed_bodies_pass_through() -> None:
    def odd(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/$batch"):
            return httpx.Response(200, content=b'{"responses": [')
        return httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})

    client = httpx.Client(transport=ScaledRetryAfterTransport(httpx.MockTransport(odd), 0.5))
    assert client.get("https://graph.test/x").headers["retry-after"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert client.post("https://graph.test/v1.0/$batch").content == b'{"responses": ['
