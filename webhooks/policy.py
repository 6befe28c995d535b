"""Which callback URLs notifications may go to, and the address each attempt connects to.

Only `https://` URLs whose host resolves to public addresses only (webhooks.addresses), or URLs
under an origin the operator allows (`BULKLICENSE_WEBHOOK_ALLOWED_ORIGINS`: scheme, host and port
exactly, and a path prefix; `http://` is accepted there). The check is made when a job is submitted
and again before every attempt, and an attempt connects to the address just checked (the host name
travels in the Host header and as the TLS server name), so a DNS answer that changes in between
cannot aim a notification at an internal service.

A refusal for the URL's address says no more than that: whether a name resolves, and to what, is
written to the server's log only, so the check cannot be used to map an internal network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from urllib.parse import SplitResult, unquote, urlsplit

from config.settings import DEFAULT_PORTS, Settings, WebhookOrigin
from webhooks.addresses import is_address, why_not_public
from webhooks.resolver import LookupBusy, LookupFailed, Resolver

log = logging.getLogger(__name__)

MAX_URL_CHARS = 2048
NOT_PUBLIC = ("callback_url must be an https:// URL whose host is a public address (internal receivers:"
              " an origin in BULKLICENSE_WEBHOOK_ALLOWED_ORIGINS)")


class CallbackRefused(Exception):
    """A callback URL notifications may not go to; the message is what the submitter may be told."""


class CallbackCheckBusy(Exception):
    """Too many callback URLs are being checked at once (overall, or for this caller): retry shortly."""


@dataclass(frozen=True)
class Target:
    """Where one attempt connects: the checked address, and the host name for Host and TLS."""

    url: str
    display: str  # scheme://host[:port], for logs: paths and queries may hold a receiver's token
    # When `url` names the checked address: the Host header (host[:port]) and the TLS server name.
    host_header: str | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class CallbackPolicy:
    """Which callback URLs are accepted, and the address each one is sent to."""

    allowed: frozenset[WebhookOrigin] = frozenset()
    resolver: Resolver = field(default_factory=Resolver)

    @classmethod
    def from_settings(cls, settings: Settings, *, per_caller: int = 2) -> CallbackPolicy:
        """The configured origins, with lookups bounded by the DNS settings."""
        resolver = Resolver(timeout_s=settings.webhook_dns_timeout_s, max_in_flight=settings.webhook_dns_concurrency,
                            max_per_caller=per_caller)
        return cls(settings.webhook_allowed_origins, resolver)

    def target(self, url: str, *, caller: str = "", timeout_s: float | None = None) -> Target:
        """Where to send a notification for `url`.

        CallbackRefused unless it may go there; CallbackCheckBusy when too many lookups run at once.
        A lookup waits at most `timeout_s` (and never longer than the resolver's own timeout).
        """
        parts = _parse(url)
        host = (parts.hostname or "").lower()
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        display = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        if any(_admits(origin, parts, host, port) for origin in self.allowed):
            return Target(url, display)
        if parts.scheme != "https":
            raise CallbackRefused(NOT_PUBLIC)
        addresses = self._addresses(host, port, display, caller, timeout_s)
        for address in addresses:
            kind = why_not_public(address)
            if kind is not None:
                log.warning("callback %s refused: %s is not a public address (%s)", display, address, kind)
                raise CallbackRefused(NOT_PUBLIC)
        if is_address(host):
            return Target(url, display)
        pinned = addresses[0]
        netloc = (f"[{pinned}]" if ":" in pinned else pinned) + (f":{parts.port}" if parts.port else "")
        return Target(parts._replace(netloc=netloc).geturl(), display, host_header=parts.netloc, server_name=host)

    def check(self, url: str, *, caller: str = "", timeout_s: float | None = None) -> None:
        """Whether a job may name this callback URL (the submission check): raises as `target` does."""
        self.target(url, caller=caller, timeout_s=timeout_s)

    def _addresses(self, host: str, port: int, display: str, caller: str, timeout_s: float | None) -> list[str]:
        if is_address(host):
            return [host]
        try:
            return self.resolver.addresses(host, port, caller=caller, timeout_s=timeout_s)
        except LookupBusy as exc:
            raise CallbackCheckBusy(str(exc)) from None
        except LookupFailed as exc:
            log.warning("callback %s refused: looking its host up: %s", display, exc)
            raise CallbackRefused(NOT_PUBLIC) from None


def _admits(origin: WebhookOrigin, parts: SplitResult, host: str, port: int) -> bool:
    """Whether a URL is under an allowed origin: same scheme, host and port, and a path below its prefix."""
    if (parts.scheme, host, port) != (origin.scheme, origin.host, origin.port):
        return False
    path = unquote(parts.path or "/")
    if "\\" in path or any(segment in (".", "..") for segment in path.split("/")):
        return False  # a receiver may normalise these into a path outside the prefix
    return path.startswith(origin.path_prefix) or path == origin.path_prefix.rstrip("/")


def _parse(url: str) -> SplitResult:
    """The URL's parts; CallbackRefused unless it is an absolute http(s) URL without credentials."""
    if len(url) > MAX_URL_CHARS:
        raise CallbackRefused(f"callback_url is longer than {MAX_URL_CHARS} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise CallbackRefused("callback_url contains spaces or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError:
        raise CallbackRefused("callback_url is not a valid URL") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise CallbackRefused("callback_url must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("callback_url may not contain credentials: notifications are signed instead")
    return parts
