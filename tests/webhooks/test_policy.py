"""Callback URLs: which are accepted, the address each attempt is pinned to, and bounded host lookups."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from config.settings import parse_webhook_origins
from webhooks.policy import NOT_PUBLIC, CallbackCheckBusy, CallbackPolicy, CallbackRefused
from webhooks.resolver import LookupBusy, LookupFailed, Resolver

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def resolver(answers: dict[str, Sequence[str]], **caps: float) -> Resolver:
    """A DNS stand-in: host -> addresses (unknown hosts do not resolve)."""
    def lookup(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise OSError(f"{host}: name does not resolve")
        return answers[host]

    return Resolver(lookup, **caps)  # type: ignore[arg-type]


def no_dns(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"{host} should not have been resolved")


POLICY = CallbackPolicy(parse_webhook_origins("http://127.0.0.1:8080, https://hr.internal:8443/hooks"), resolver({
    "hooks.example.com": [PUBLIC_V4],
    "v6.example.com": [PUBLIC_V6],
    "internal.example.com": ["10.1.2.3"],
    "split.example.com": [PUBLIC_V4, "192.168.1.10"],
    "metadata.example.com": ["169.254.169.254"],
    "anycast.example.com": ["192.0.0.9"],
    "sitelocal.example.com": ["fec0::1"],
}))


@pytest.mark.parametrize(("url", "why"), [
    ("http://hooks.example.com/x", NOT_PUBLIC),
    ("ftp://hooks.example.com/x", "must be an https:// URL"),
    ("hooks.example.com/x", "must be an https:// URL"),
    ("https:///x", "must be an https:// URL"),
    ("https://user:pw@hooks.example.com/x", "may not contain credentials"),
    ("https://hooks.example.com:99999/x", "not a valid URL"),
    ("https://hooks.example.com/a b", "spaces or control characters"),
    ("https://" + "a" * 2100 + ".example.com/", "longer than 2048"),
])
def test_urls_of_the_wrong_shape_are_refused_saying_why(url: str, why: str) -> None:
    with pytest.raises(CallbackRefused) as refused:
        POLICY.target(url)
    assert why in str(refused.value)


@pytest.mark.parametrize(("url", "logged"), [
    ("https://nowhere.example.com/x", "does not resolve"),
    ("https://127.0.0.2/x", "127.0.0.2 is not a public address (loopback)"),
    ("https://[::1]/x", "::1 is not a public address (loopback)"),
    ("https://10.0.0.1/x", "10.0.0.1 is not a public address (private)"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://[::ffff:127.0.0.1]/x", "loopback"),
    ("https://internal.example.com/x", "10.1.2.3 is not a public address (private)"),
    ("https://split.example.com/x", "192.168.1.10 is not a public address (private)"),
    ("https://metadata.example.com/x", "169.254.169.254 is not a public address (link-local)"),
    ("https://anycast.example.com/x", "192.0.0.9 is not a public address (IETF protocol assignment)"),
    ("https://sitelocal.example.com/x", "fec0::1 is not a public address (site-local)"),
    ("https://[fec0::1]/x", "site-local"),
    ("https://192.0.0.8/x", "IETF protocol assignment"),
    ("https://localhost/x", "does not resolve"),  # not in the fake DNS; the real one is covered below
])
def test_an_address_refusal_tells_the_caller_nothing_about_the_network(
    url: str, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="webhooks.policy"), pytest.raises(CallbackRefused) as refused:
        POLICY.target(url)
    # The same words whatever the reason: no address, no "does not resolve" for the caller to map with ...
    assert str(refused.value) == NOT_PUBLIC
    # ... while the server's log has the details, without the URL's path or query.
    assert logged in caplog.text and "/x" not in caplog.text and "meta-data" not in caplog.text


def test_localhost_is_refused_by_what_it_resolves_to(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="webhooks.policy"), pytest.raises(CallbackRefused):
        CallbackPolicy().target("https://localhost:8443/hook")  # the machine's own resolver
    assert "is not a public address (loopback)" in caplog.text


def test_public_hosts_are_sent_to_the_address_that_was_checked() -> None:
    target = POLICY.target("https://hooks.example.com/hr/notify?token=abc")
    assert target.url == f"https://{PUBLIC_V4}/hr/notify?token=abc"
    assert (target.host_header, target.server_name) == ("hooks.example.com", "hooks.example.com")
    assert target.display == "https://hooks.example.com"  # no path or query: they may hold a token

    v6 = POLICY.target("https://v6.example.com:8443/x")
    assert v6.url == f"https://[{PUBLIC_V6}]:8443/x"
    assert (v6.host_header, v6.server_name) == ("v6.example.com:8443", "v6.example.com")

    literal = POLICY.target(f"https://{PUBLIC_V4}/x")
    assert literal.url == f"https://{PUBLIC_V4}/x" and literal.host_header is None


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://127.0.0.1:8080", "HTTP://127.0.0.1:8080/a/b?c=d",
    "https://hr.internal:8443/hooks", "https://HR.internal:8443/hooks/bulk", "https://hr.internal:8443/hooks/",
])
def test_an_allowed_origin_may_be_internal_and_plain_http_without_a_lookup(url: str) -> None:
    policy = CallbackPolicy(POLICY.allowed, Resolver(no_dns))
    target = policy.target(url)
    assert target.url == url and target.host_header is None


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8081/hook",  # another port of an allowed host
    "http://127.0.0.1/hook",  # port 80
    "https://127.0.0.1:8080/hook",  # another scheme
    "http://127.0.0.2:8080/hook",  # another host
    "https://hr.internal:8443/admin",  # outside the path prefix
    "https://hr.internal:8443/hooksmith",
    "https://hr.internal:8443/hooks/../admin",  # a receiver may normalise these out of the prefix
    "https://hr.internal:8443/hooks/%2e%2e/admin",
    "https://hr.internal:8443/hooks/..%5Cadmin",
    "https://hr.internal/hooks/x",  # port 443
])
def test_an_allowed_origin_is_exact_scheme_host_port_and_path(url: str) -> None:
    policy = CallbackPolicy(POLICY.allowed, Resolver(lambda host, port: ["10.9.9.9"]))
    with pytest.raises(CallbackRefused, match="public address"):
        policy.target(url)


# --- bounded lookups ---------------------------------------------------------------------------------

class SlowDns:
    """A lookup that hangs until released, counting the lookups under way."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self._lock = threading.Lock()

    def __call__(self, host: str, port: int) -> Sequence[str]:
        with self._lock:
            self.running += 1
        try:
            self.release.wait(30)
            return [PUBLIC_V4]
        finally:
            with self._lock:
                self.running -= 1


def timed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except BaseException as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_a_hanging_lookup_holds_the_caller_for_the_timeout_only() -> None:
    dns = SlowDns()
    policy = CallbackPolicy(resolver=Resolver(dns, timeout_s=0.2))
    try:
        waited_s, refused = timed(lambda: policy.check("https://slow.example.com/h"))
        assert isinstance(refused, CallbackRefused) and str(refused) == NOT_PUBLIC
        assert 0.2 <= waited_s < 1.0
        shorter_s, _ = timed(lambda: policy.check("https://slow.example.com/h", timeout_s=0.05))
        assert shorter_s < 0.15  # a caller with less time left gives it less
    finally:
        dns.release.set()


def test_lookups_are_capped_per_caller_and_overall_and_refused_at_once_beyond() -> None:
    dns = SlowDns()
    resolve = Resolver(dns, timeout_s=0.1, max_in_flight=3, max_per_caller=2)
    try:
        for caller in ("key-a", "key-a", "key-b"):  # each gives up after 0.1 s; its lookup still hangs
            with pytest.raises(LookupFailed):
                resolve.addresses("slow.example.com", 443, caller=caller)
        assert dns.running == 3
        for caller in ("key-a", "key-c"):  # key-a's own cap, then the overall one
            waited_s, busy = timed(lambda caller=caller: resolve.addresses("x.example.com", 443, caller=caller))
            assert isinstance(busy, LookupBusy) and waited_s < 0.05
        with pytest.raises(CallbackCheckBusy):
            CallbackPolicy(resolver=resolve).check("https://x.example.com/h", caller="key-d")
        dns.release.set()  # the hung lookups end: their slots are free again
        deadline = time.monotonic() + 5
        while dns.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert resolve.addresses("slow.example.com", 443, caller="key-a") == [PUBLIC_V4]
    finally:
        dns.release.set()
