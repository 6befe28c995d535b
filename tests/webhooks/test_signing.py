"""The signature headers, checked the way the README tells receivers to check them."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.helpers import readme_receiver_check
from webhooks.signing import (
    SIGNATURE_HEADER,
    SIGNATURE_V2_HEADER,
    hmac_sha256,
    signature_headers,
    signed_content,
)

SECRET = b"contoso-webhook-secret"
BODY = json.dumps({"id": "5f0c", "tenant": "contoso", "status": "completed"}).encode()
DELIVERY = "5f0c2d9e8a7b4c1d9e0f1a2b3c4d5e6f"


def headers(timestamp: int, *, secret: bytes = SECRET, body: bytes = BODY, legacy: bool = True) -> httpx.Headers:
    """As a receiver's framework gives them: looked up case-insensitively."""
    return httpx.Headers(signature_headers(secret, timestamp=timestamp, delivery_id=DELIVERY, event="finished",
                                           body=body, legacy=legacy))


def test_the_signed_bytes_are_timestamp_delivery_event_and_body() -> None:
    assert signed_content(1736154843, DELIVERY, "finished", b'{"a":1}') == (
        b'1736154843.5f0c2d9e8a7b4c1d9e0f1a2b3c4d5e6f.finished.{"a":1}')
    sent = headers(1736154843)
    assert sent[SIGNATURE_V2_HEADER] == hmac_sha256(SECRET, signed_content(1736154843, DELIVERY, "finished", BODY))
    assert sent[SIGNATURE_HEADER] == hmac_sha256(SECRET, BODY)  # the older one, body only
    assert SIGNATURE_HEADER not in headers(1736154843, legacy=False)


def test_the_readme_check_accepts_a_fresh_notification_of_its_tenant() -> None:
    check = readme_receiver_check()
    assert check(SECRET, headers(int(time.time())), BODY, "contoso")["id"] == "5f0c"


@pytest.mark.parametrize(("change", "why"), [
    ("stale", "stale timestamp"),
    ("future", "stale timestamp"),
    ("no timestamp", "stale timestamp"),
    ("other event", "bad signature"),
    ("other delivery", "bad signature"),
    ("other timestamp", "bad signature"),
    ("other secret", "bad signature"),
    ("other body", "bad signature"),
    ("other tenant", "another tenant"),
])
def test_the_readme_check_refuses_replays_forgeries_and_other_tenants(change: str, why: str) -> None:
    check = readme_receiver_check()
    now = int(time.time())
    sent, body, tenant = headers(now), BODY, "contoso"
    if change == "stale":
        sent = headers(now - 301)
    elif change == "future":
        sent = headers(now + 301)
    elif change == "no timestamp":
        del sent["x-bulklicense-timestamp"]
    elif change == "other event":
        sent["X-BulkLicense-Event"] = "paused"
    elif change == "other delivery":
        sent["X-BulkLicense-Delivery"] = "0" * 32  # a fresh id to get past deduplication
    elif change == "other timestamp":
        sent["X-BulkLicense-Timestamp"] = str(now - 1)
    elif change == "other secret":
        sent = headers(now, secret=b"fabrikam-webhook-secret")
    elif change == "other body":
        body = BODY.replace(b"completed", b"failed")
    elif change == "other tenant":
        tenant = "fabrikam"
    with pytest.raises(ValueError, match=why):
        check(SECRET, sent, body, tenant)
