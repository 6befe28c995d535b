"""One POST on real sockets: a total deadline whatever the receiver drips, a capped answer, no proxy."""

from __future__ import annotations

import socket
import time
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes import HostileReceiver
from webhooks.policy import Target
from webhooks.sender import MAX_ANSWER_BYTES, Answer, Sender, http_client

DEADLINE_S = 0.5
# What a loaded machine may add to a deadline: well under a drip's next byte, let alone for ever.
SLACK_S = 0.4


@pytest.fixture
def sender() -> Iterator[Sender]:
    post = Sender(http_client())
    yield post
    post.close()


def receiving(mode: str, **options: float) -> HostileReceiver:
    return HostileReceiver(mode, **options).start()  # type: ignore[arg-type]


def post(sender: Sender, url: str, timeout_s: float = DEADLINE_S) -> tuple[Answer, float]:
    started = time.monotonic()
    answer = sender.post(Target(url, url), b'{"id":"j"}', {"X-BulkLicense-Event": "finished"}, timeout_s=timeout_s)
    return answer, time.monotonic() - started


def test_headers_dripped_a_byte_at_a_time_end_at_the_deadline(sender: Sender) -> None:
    # Each byte comes well within any per-read timeout: only a deadline on the whole attempt ends it.
    receiver = receiving("drip-headers", drip_interval_s=0.05)
    try:
        answer, took_s = post(sender, receiver.url())
    finally:
        receiver.stop()
    assert answer == Answer(None, "ReadTimeout") and answer.retryable
    assert DEADLINE_S - 0.05 <= took_s < DEADLINE_S + SLACK_S


def test_a_dripped_body_after_a_200_counts_as_delivered_and_ends_at_the_deadline(sender: Sender) -> None:
    receiver = receiving("drip-body", drip_interval_s=0.05)
    try:
        answer, took_s = post(sender, receiver.url())
    finally:
        receiver.stop()
    assert answer == Answer(200) and answer.accepted
    assert took_s < DEADLINE_S + SLACK_S
    (connection,) = receiver.served()
    assert connection.bytes_sent < MAX_ANSWER_BYTES  # a byte every 50 ms: the deadline came first


def test_an_endless_body_is_read_a_few_kib_then_the_connection_is_closed(sender: Sender) -> None:
    receiver = receiving("flood", flood_limit_bytes=64 << 20)
    tracemalloc.start()
    try:
        answer, took_s = post(sender, receiver.url(), timeout_s=5.0)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        receiver.stop()
    assert answer == Answer(200)
    assert took_s < 2.0  # closed after the first read, not after 64 MiB
    assert peak_bytes < 1 << 20, f"{peak_bytes} bytes allocated while a 64 MiB answer streamed in"
    deadline = time.monotonic() + 5
    while receiver.open_now() and time.monotonic() < deadline:
        time.sleep(0.01)
    (connection,) = receiver.served()
    # The receiver could only fill the socket buffers before it met the closed connection.
    assert connection.closed_at is not None and connection.bytes_sent < 32 << 20


def test_a_receiver_that_never_answers_the_tls_handshake_ends_at_the_deadline(sender: Sender) -> None:
    receiver = receiving("silent")
    try:
        answer, took_s = post(sender, f"https://127.0.0.1:{receiver.port}/hook")
    finally:
        receiver.stop()
    assert answer == Answer(None, "ConnectTimeout")
    assert DEADLINE_S - 0.05 <= took_s < DEADLINE_S + SLACK_S


def test_no_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as proxy:
        proxy.settimeout(0.2)
        proxy_url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        receiver = receiving("ok")
        post_with_env_proxy = Sender(http_client())  # built while the proxy variables are set
        try:
            answer, _ = post(post_with_env_proxy, receiver.url())
        finally:
            post_with_env_proxy.close()
            receiver.stop()
        assert answer == Answer(200) and len(receiver.served()) == 1
        with pytest.raises(TimeoutError):
            proxy.accept()  # nobody went through the proxy


@pytest.mark.parametrize(("answer", "accepted", "retryable"), [
    (204, True, False),
    (500, False, True),
    (503, False, True),
    (429, False, True),
    (408, False, True),
    (404, False, False),
    (302, False, False),  # redirects are never followed
    (httpx.ConnectError("refused"), False, True),
])
def test_what_an_answer_means(answer: int | Exception, accepted: bool, retryable: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, headers={"Location": "http://169.254.169.254/"})

    seen = Sender(httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=False))
    got = seen.post(Target("https://93.184.215.14/h", "https://hooks.example.com", "hooks.example.com",
                           "hooks.example.com"), b"{}", {}, timeout_s=1.0)
    assert (got.accepted, got.retryable) == (accepted, retryable)
