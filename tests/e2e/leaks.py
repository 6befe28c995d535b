"""How a secret is searched for in what a stack leaves behind."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus


def needles_for(secret: str) -> list[bytes]:
    """A secret as it is, URL-encoded, and in base64 at every alignment (HTTP Basic, Celery bodies)."""
    raw = secret.encode()
    out = {raw, quote(secret, safe="").encode(), quote_plus(secret).encode()}
    for pad in range(3):
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            text = enc(b"\0" * pad + raw)
            start = -(-pad * 4 // 3) + 1
            out.add(text[start:-4])
    return sorted(out)
