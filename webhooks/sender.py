"""One POST to a receiver, bounded in time and in what it reads back.

httpx's timeouts apply to each socket operation, so a receiver that sends a byte every few seconds
would keep an attempt going for ever. Here every operation (connect, TLS, each send, each read) is
given at most what is left of the attempt's wall-clock deadline, so connecting, sending and the
whole answer end by it. Of the answer, the status decides; at most MAX_ANSWER_BYTES of its body
are read (and dropped), then the connection is closed, so an endless body costs nothing.
No proxy from the environment is used, and no connection is kept for a later attempt.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore
import httpx

from config.logs import http_lines_hidden
from webhooks.policy import Target

MAX_ANSWER_BYTES = 4096
# Answers worth another try: the receiver is overloaded, restarting or timed out.
RETRY_STATUSES = frozenset({408, 429})

# When the attempt running in this thread must end (time.monotonic()), or None outside one.
_deadline: ContextVar[float | None] = ContextVar("bulklicense_webhook_deadline", default=None)


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    """`timeout` cut down to what is left before the deadline; `expired` raised when nothing is."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the attempt's deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every operation ends by the attempt's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname,
                                                      _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """Opens connections (TCP only) that keep the attempt's deadline."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_tcp(host, port, _left(timeout, httpcore.ConnectTimeout),
                                                         local_address, socket_options))


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport over connections that keep each attempt's deadline; none kept alive, no proxy."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx takes no network backend of its own: its pool is rebuilt with ours (tests/webhooks
        # checks on real sockets that the deadline holds, so a change in httpx cannot go unnoticed).
        self._pool = httpcore.ConnectionPool(ssl_context=ssl_context, max_keepalive_connections=0,
                                             network_backend=_DeadlineBackend())


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Receivers are verified against the usual CA bundle, and `ca_file` when given."""
    context = httpx.create_ssl_context(trust_env=False)
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


def http_client(ca_file: Path | None = None) -> httpx.Client:
    """The client notifications go out with: deadline-keeping connections, no proxy, no redirects."""
    return httpx.Client(transport=DeadlineTransport(tls_context(ca_file)), trust_env=False, follow_redirects=False)


@dataclass(frozen=True)
class Answer:
    """What one POST came to: the receiver's status, or why there was none."""

    status: int | None
    error: str | None = None  # the failure's name (ConnectError, ReadTimeout, ...) when there was no status

    @property
    def accepted(self) -> bool:
        """The receiver took it (2xx)."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """Another attempt may succeed: no answer, a 5xx, a 408 or a 429."""
        return self.status is None or self.status >= 500 or self.status in RETRY_STATUSES

    def __str__(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else str(self.error)


class Sender:
    """Sends one POST with a total deadline and a cap on the answer read back."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http

    def close(self) -> None:
        """Release the HTTP client."""
        self._http.close()

    def post(self, target: Target, body: bytes, headers: Mapping[str, str], *, timeout_s: float) -> Answer:
        """POST `body` to the target; everything (connect, send, the whole answer) ends within `timeout_s`."""
        sent = {"Content-Type": "application/json", "User-Agent": "bulk-license", **headers}
        extensions: dict[str, Any] = {}
        if target.host_header is not None and target.server_name is not None:
            sent["Host"] = target.host_header
            extensions["sni_hostname"] = target.server_name
        status: int | None = None
        try:
            with _until(time.monotonic() + timeout_s), http_lines_hidden(), \
                    self._http.stream("POST", target.url, content=body, headers=sent, extensions=extensions,
                                      timeout=timeout_s) as response:
                status = response.status_code
                _drain(response)
        except httpx.HTTPError as exc:
            if status is None:
                return Answer(None, type(exc).__name__)
            # The status came: a body cut short by the deadline changes nothing.
        return Answer(status)


@contextmanager
def _until(deadline: float) -> Iterator[None]:
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def _drain(response: httpx.Response) -> None:
    """Read and drop at most MAX_ANSWER_BYTES of the body (the rest is never read: the connection closes)."""
    if response.is_stream_consumed:  # an answer made in memory (a mock transport): nothing left to read
        return
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read >= MAX_ANSWER_BYTES:
            return
