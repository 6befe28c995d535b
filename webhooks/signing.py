"""The signature headers of a notification.

`X-BulkLicense-Signature-V2: sha256=<hex>` is the HMAC-SHA256, keyed with the tenant's webhook
secret, of `<timestamp>.<delivery id>.<event>.` followed by the raw body; the timestamp (Unix
seconds) goes in `X-BulkLicense-Timestamp`. A receiver that checks it knows the event and the
delivery id are ours, and refuses a replay once the timestamp is stale. The older
`X-BulkLicense-Signature` (the body alone) is sent beside it while receivers move over.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-BulkLicense-Signature"  # the body alone: replayable, kept for older receivers
SIGNATURE_V2_HEADER = "X-BulkLicense-Signature-V2"
TIMESTAMP_HEADER = "X-BulkLicense-Timestamp"
EVENT_HEADER = "X-BulkLicense-Event"
DELIVERY_HEADER = "X-BulkLicense-Delivery"


def hmac_sha256(secret: bytes, content: bytes) -> str:
    """`sha256=` and the hex HMAC-SHA256 of `content`."""
    return "sha256=" + hmac.new(secret, content, hashlib.sha256).hexdigest()


def signed_content(timestamp: int, delivery_id: str, event: str, body: bytes) -> bytes:
    """What X-BulkLicense-Signature-V2 signs: `<timestamp>.<delivery id>.<event>.<body>`."""
    return f"{timestamp}.{delivery_id}.{event}.".encode() + body


def signature_headers(secret: bytes, *, timestamp: int, delivery_id: str, event: str, body: bytes,
                      legacy: bool) -> dict[str, str]:
    """The headers that identify and sign one attempt (with the older body-only signature when `legacy`)."""
    headers = {EVENT_HEADER: event, DELIVERY_HEADER: delivery_id, TIMESTAMP_HEADER: str(timestamp),
               SIGNATURE_V2_HEADER: hmac_sha256(secret, signed_content(timestamp, delivery_id, event, body))}
    if legacy:
        headers[SIGNATURE_HEADER] = hmac_sha256(secret, body)
    return headers
