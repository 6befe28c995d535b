"""A scaled time base for tests and demos: Graph's Retry-After values, shrunk at the HTTP edge.

With `BULKLICENSE_TIME_SCALE=0.01` a `Retry-After: 300` reads as 3 s everywhere behind the
transport (the retry policy, the shared pause gate, the hand-back countdown), so a test can prove
the long-wait path without waiting five minutes. Never set it against real Microsoft Graph.
"""

from __future__ import annotations

import json
from typing import Any

import httpx


def _scaled(value: str, scale: float) -> str:
    try:
        return f"{float(value) * scale:.3f}"
    except ValueError:
        return value  # an HTTP-date: left as it is


class ScaledRetryAfterTransport(httpx.BaseTransport):
    """Wraps a transport and multiplies every Retry-After (also inside `$batch` items) by `scale`."""

    def __init__(self, inner: httpx.BaseTransport, scale: float) -> None:
        self.inner = inner
        self.scale = scale

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        headers = httpx.Headers(response.headers)
        if "retry-after" in headers:
            headers["retry-after"] = _scaled(headers["retry-after"], self.scale)
        content: bytes | None = None
        if request.url.path.endswith("/$batch") and response.status_code == 200:
            content = response.read()
            try:
                body: Any = json.loads(content)
                for item in body.get("responses", []):
                    for key in list((item.get("headers") or {}).keys()):
                        if key.lower() == "retry-after":
                            item["headers"][key] = _scaled(str(item["headers"][key]), self.scale)
                content = json.dumps(body).encode()
            except (ValueError, AttributeError, TypeError):
                pass  # malformed bodies pass through untouched for the client to judge
            headers.pop("content-length", None)
        if content is None:
            return httpx.Response(response.status_code, headers=headers, stream=response.stream,
                                  extensions=response.extensions)
        return httpx.Response(response.status_code, headers=headers, content=content, extensions=response.extensions)

    def close(self) -> None:
        self.inner.close()
