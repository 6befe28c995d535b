"""Job notifications: the job, POSTed as JSON and signed, to its callback URL when it ends or pauses.

A job's callback URL is its own (`callback_url` at submission) or its tenant profile's. Only
`https://` URLs to public addresses are accepted, except hosts the operator allows
(`BULKLICENSE_WEBHOOK_ALLOWED_HOSTS`, where `http://` is accepted too). The address is checked when
the job is submitted and again before every attempt, and the request goes to the address that was
checked (the host name travels in the Host header and as the TLS server name), so a DNS answer that
changes in between cannot aim a notification at an internal service.

The body is signed with `BULKLICENSE_WEBHOOK_SECRET`: `X-BulkLicense-Signature: sha256=<hex>`, the
HMAC-SHA256 of the raw body. A connection error, a timeout, a 408, a 429 or a 5xx is retried with
exponential backoff through the broker; nothing here ever blocks or fails the job.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

from config import Settings
from config.logs import http_lines_hidden, log_context
from jobs.events import JobEvent
from jobs.models import UserResult
from jobs.seats import seat_table, with_seats
from jobs.store import JobStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-BulkLicense-Signature"
EVENT_HEADER = "X-BulkLicense-Event"
DELIVERY_HEADER = "X-BulkLicense-Delivery"
MAX_URL_CHARS = 2048
# Each retry waits this many times longer than the one before.
BACKOFF_FACTOR = 3.0
BACKOFF_JITTER = 0.2
# Answers worth another try: the receiver is overloaded, restarting or timed out.
RETRY_STATUSES = frozenset({408, 429})
NOTIFIED_EVENTS = frozenset({JobEvent.FINISHED, JobEvent.PAUSED})
# NAT64's well-known prefix carries an IPv4 address in its last 32 bits.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

Resolve = Callable[[str, int], Sequence[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """The addresses a host name resolves to (OSError when it does not)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


def signature(secret: bytes, body: bytes) -> str:
    """The value of the signature header for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class CallbackRefused(Exception):
    """A callback URL that notifications may not go to; the message says why."""


@dataclass(frozen=True)
class Target:
    """Where one attempt connects: the checked address, and the host name for Host and TLS."""

    url: str
    display: str  # scheme://host[:port], for logs: paths and queries may hold a receiver's token
    # When `url` names the checked address: the Host header (host[:port]) and the TLS server name.
    host_header: str | None = None
    server_name: str | None = None


def _not_public(address: str) -> str | None:
    """Why an address is not a public one, or None."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):  # IPv4 inside IPv6 is judged as the IPv4 address
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        ip = inner or ip
    # The narrower kinds first: Python counts link-local, unspecified and reserved ranges as private too.
    for flag, kind in (("is_loopback", "loopback"), ("is_link_local", "link-local"), ("is_multicast", "multicast"),
                       ("is_unspecified", "unspecified"), ("is_reserved", "reserved"), ("is_private", "private")):
        if getattr(ip, flag):
            return f"a {kind} address ({address})"
    if not ip.is_global:
        return f"a non-public address ({address})"
    return None


@dataclass(frozen=True)
class CallbackPolicy:
    """Which callback URLs are accepted, and the address each one is sent to."""

    enabled: bool
    allowed_hosts: frozenset[str] = frozenset()
    resolve: Resolve = resolve_host

    @classmethod
    def from_settings(cls, settings: Settings, resolve: Resolve = resolve_host) -> CallbackPolicy:
        """Enabled when a webhook secret is configured."""
        return cls(settings.webhook_secret is not None, settings.webhook_allowed_hosts, resolve)

    def problem(self, url: str) -> str | None:
        """Why a job may not name this callback URL, or None (the submission check)."""
        if not self.enabled:
            return "notifications are not configured on this server (BULKLICENSE_WEBHOOK_SECRET is unset)"
        try:
            self.target(url)
        except CallbackRefused as exc:
            return str(exc)
        return None

    def target(self, url: str) -> Target:
        """Where to send a notification for `url`; CallbackRefused unless it may go there."""
        parts = _parse(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        display = f"{parts.scheme}://{parts.netloc}"
        if host in self.allowed_hosts:
            return Target(url, display)
        if parts.scheme != "https":
            raise CallbackRefused("callback_url must be an https:// URL")
        addresses = self._addresses(host, port)
        for address in addresses:
            why = _not_public(address)
            if why is not None:
                raise CallbackRefused(f"callback_url host {host} is {why}: notifications go to public addresses"
                                      " only (or to a host in BULKLICENSE_WEBHOOK_ALLOWED_HOSTS)")
        if _is_address(host):
            return Target(url, display)
        pinned = addresses[0]
        netloc = (f"[{pinned}]" if ":" in pinned else pinned) + (f":{parts.port}" if parts.port else "")
        return Target(parts._replace(netloc=netloc).geturl(), display, host_header=parts.netloc, server_name=host)

    def _addresses(self, host: str, port: int) -> list[str]:
        if _is_address(host):
            return [host]
        try:
            addresses = list(self.resolve(host, port))
        except (OSError, UnicodeError):
            addresses = []
        if not addresses:
            raise CallbackRefused(f"callback_url host {host} cannot be resolved")
        return addresses


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise CallbackRefused("callback_url must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("callback_url may not contain credentials: notifications are signed instead")
    return parts


@dataclass(frozen=True)
class Delivery:
    """One notification on its way: the job and event, then (from the first attempt) its exact body."""

    job_id: str
    event: JobEvent
    attempt: int = 1
    body: str | None = None
    delivery_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The task's argument."""
        return {k: v for k, v in asdict(self).items() if v is not None} | {"event": self.event.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Delivery:
        """Inverse of `to_json`."""
        return cls(job_id=str(data["job_id"]), event=JobEvent(data["event"]), attempt=int(data.get("attempt", 1)),
                   body=data.get("body"), delivery_id=data.get("delivery_id"))


class DeliveryOutcome(StrEnum):
    """What became of one attempt to deliver a notification."""

    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"  # refused by the receiver, or out of attempts
    REFUSED = "refused"  # the URL may not be used (any more)
    SKIPPED = "skipped"  # nowhere to send it, or the job is gone


SendLater = Callable[[Delivery, float], None]


class Notifier:
    """Sends one attempt of a notification and, when it may succeed later, queues the next."""

    def __init__(self, store: JobStore, *, secret: bytes | None, policy: CallbackPolicy, http: httpx.Client,
                 send_later: SendLater, tenant_urls: Mapping[str, str | None] | None = None,
                 max_attempts: int = 5, backoff_base_s: float = 10.0, rng: random.Random | None = None,
                 observe: Callable[[DeliveryOutcome], None] = lambda _: None) -> None:
        self.store = store
        self._secret = secret
        self._policy = policy
        self._http = http
        self._send_later = send_later
        self._tenant_urls = dict(tenant_urls or {})
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._rng = rng or random.Random()
        self._observe = observe

    @classmethod
    def from_settings(cls, settings: Settings, store: JobStore, send_later: SendLater, *,
                      observe: Callable[[DeliveryOutcome], None] = lambda _: None) -> Notifier:
        """A notifier with its own HTTP client (receivers verified against BULKLICENSE_WEBHOOK_CA_FILE too)."""
        verify: ssl.SSLContext | bool = True
        if settings.webhook_ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.webhook_ca_file))
        http = httpx.Client(verify=verify, timeout=httpx.Timeout(settings.webhook_timeout_s), follow_redirects=False)
        secret = settings.webhook_secret.get_secret_value().encode() if settings.webhook_secret else None
        return cls(store, secret=secret, policy=CallbackPolicy.from_settings(settings), http=http,
                   send_later=send_later, tenant_urls={n: p.callback_url for n, p in settings.tenants.items()},
                   max_attempts=settings.webhook_max_attempts, backoff_base_s=settings.webhook_backoff_base_s,
                   observe=observe)

    def close(self) -> None:
        """Release the HTTP connections."""
        self._http.close()

    def deliver(self, delivery: Delivery) -> DeliveryOutcome:
        """Make one attempt; queue the next when this one may succeed later. Never raises for the receiver."""
        with log_context(job=delivery.job_id):
            outcome = self._attempt(delivery)
        self._observe(outcome)
        return outcome

    def _attempt(self, delivery: Delivery) -> DeliveryOutcome:
        job = self.store.job(delivery.job_id)
        url = None if job is None else job.spec.callback_url or self._tenant_urls.get(job.tenant)
        if not url:
            return DeliveryOutcome.SKIPPED
        if self._secret is None:
            log.warning("job %s has a callback URL but BULKLICENSE_WEBHOOK_SECRET is unset: not notified",
                        delivery.job_id)
            return DeliveryOutcome.SKIPPED
        if delivery.body is None:
            body = self._render(delivery.job_id)
            if body is None:
                return DeliveryOutcome.SKIPPED
            delivery = replace(delivery, body=body, delivery_id=uuid.uuid4().hex)
        try:
            target = self._policy.target(url)
        except CallbackRefused as exc:
            log.warning("notification of job %s (%s) not sent: %s", delivery.job_id, delivery.event, exc)
            return DeliveryOutcome.REFUSED
        problem = self._post(target, delivery)
        if problem is None:
            log.info("notification of job %s (%s) delivered to %s (attempt %d)", delivery.job_id, delivery.event,
                     target.display, delivery.attempt)
            return DeliveryOutcome.DELIVERED
        retryable, why = problem
        if not retryable or delivery.attempt >= self._max_attempts:
            log.warning("notification of job %s (%s) to %s failed after %d attempt(s): %s", delivery.job_id,
                        delivery.event, target.display, delivery.attempt, why)
            return DeliveryOutcome.FAILED
        wait_s = self._backoff_s(delivery.attempt)
        log.info("notification of job %s (%s) to %s: %s; attempt %d in %.1fs", delivery.job_id, delivery.event,
                 target.display, why, delivery.attempt + 1, wait_s)
        self._send_later(replace(delivery, attempt=delivery.attempt + 1), wait_s)
        return DeliveryOutcome.RETRYING

    def _render(self, job_id: str) -> str | None:
        """The job as GET /v1/jobs/{id} shows it; a plan's seat table, which needs Graph, is left to that call."""
        progress = self.store.progress(job_id)
        if progress is None:
            return None
        # As GET answers when Graph cannot be asked: no seat table unless the plan needs and frees no seat.
        lines = seat_table(progress.plan, None, dict) if progress.plan is not None else None
        return json.dumps(with_seats(progress.to_json(), lines), separators=(",", ":"))

    def _post(self, target: Target, delivery: Delivery) -> tuple[bool, str] | None:
        """Send the attempt; None when the receiver took it, else (worth retrying, why not)."""
        assert self._secret is not None and delivery.body is not None
        body = delivery.body.encode()
        headers = {"Content-Type": "application/json", "User-Agent": "bulk-license",
                   SIGNATURE_HEADER: signature(self._secret, body), EVENT_HEADER: delivery.event.value,
                   DELIVERY_HEADER: delivery.delivery_id or ""}
        extensions: dict[str, Any] = {}
        if target.host_header is not None and target.server_name is not None:
            headers["Host"] = target.host_header
            extensions["sni_hostname"] = target.server_name
        try:
            with http_lines_hidden():  # the client's line has the whole URL: a receiver's token may be in it
                response = self._http.post(target.url, content=body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            return True, type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        status = response.status_code
        return status >= 500 or status in RETRY_STATUSES, f"HTTP {status}"

    def _backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (1-based): base × 3^(attempt-1), ±20 %."""
        wait_s = self._backoff_base_s * BACKOFF_FACTOR ** (attempt - 1)
        return wait_s * self._rng.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)


@dataclass(frozen=True)
class NotifyOnEnd:
    """The job-side trigger: queues a notification when a job ends or pauses (and does nothing else)."""

    enqueue: SendLater
    events: frozenset[JobEvent] = field(default=NOTIFIED_EVENTS)

    def job_event(self, job_id: str, _tenant: str, event: JobEvent, _details: Mapping[str, Any]) -> None:
        """Queue the notification task; whether the job has a callback is for the task to find out."""
        if event in self.events:
            self.enqueue(Delivery(job_id, event), 0.0)

    def users_finished(self, _job_id: str, _tenant: str, _results: Sequence[UserResult]) -> None:
        """Not notified."""
