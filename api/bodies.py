"""A request body as it arrives: one size limit however it is sent, and a deadline for sending it.

Every byte of a submission goes through `BodyStream`, whether the body has a Content-Length or is
chunked, and whatever it is (JSON, CSV, multipart): a declared length over the limit is refused
before anything is read, a streamed one as soon as it passes the limit (413). So nothing is kept,
in memory or in a spool file, past the limit.

The deadline works as Apache's mod_reqtimeout: the body has `timeout_s` to arrive, plus one second
for every `min_rate_bytes_s` bytes received. A client that trickles a byte now and then (to hold a
connection, or an idempotency key) is answered 408 within `timeout_s` or so; an upload going at a
usable pace is never cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request

from api.errors import ApiError

# The connection is closed after these refusals: the rest of the body is not read.
CLOSE = {"Connection": "close"}


@dataclass(frozen=True)
class BodyPace:
    """How fast a request body must arrive."""

    timeout_s: float = 20.0
    min_rate_bytes_s: int = 16 * 1024

    def describe(self) -> str:
        """The rule, for messages."""
        return f"{self.timeout_s:g} s plus 1 s per {size_text(self.min_rate_bytes_s)} received"


class BodyStream:
    """The body of a request, read once as byte chunks, within a size limit and a deadline."""

    def __init__(self, request: Request, limit_bytes: int, pace: BodyPace, *, what: str, refusal: str,
                 slack_bytes: int = 0) -> None:
        self._request = request
        self.limit_bytes = limit_bytes
        self._pace = pace
        self._what = what  # "the JSON body", "the upload"
        self._refusal = refusal  # the 413's message
        self._slack_bytes = slack_bytes  # framing allowed on top (multipart boundaries and part headers)
        self.received = 0

    def _refuse_declared(self) -> None:
        """413 before reading anything when the Content-Length already exceeds the limit."""
        length = self._request.headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self.limit_bytes + self._slack_bytes:
            raise self._too_big()

    def _too_big(self) -> ApiError:
        """The 413 refusal."""
        return ApiError(413, self._refusal, headers=CLOSE)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; 413 past the limit, 408 when it arrives too slowly."""
        self._refuse_declared()
        loop = asyncio.get_running_loop()
        started = loop.time()
        stream = self._request.stream().__aiter__()
        while True:
            deadline = started + self._pace.timeout_s + self.received / self._pace.min_rate_bytes_s
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise ApiError(408, f"{self._what} arrived too slowly: a request body has {self._pace.describe()}"
                                    " to arrive; send it again", headers=CLOSE) from None
            self.received += len(chunk)
            if self.received > self.limit_bytes + self._slack_bytes:
                raise self._too_big()
            if chunk:
                yield chunk


def size_text(n_bytes: int) -> str:
    """A byte count for people: whole GB, MB or KB when exact."""
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n_bytes >= factor and n_bytes % factor == 0:
            return f"{n_bytes // factor} {unit}"
    return f"{n_bytes:,} bytes"
