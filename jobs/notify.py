"""Job notifications: when a job ends, pauses or is decided on, the job as JSON, signed, POSTed to its callback URLs.

Who is told: the job's own `callback_url` (given at submission) and its tenant profile's, each as a
delivery of its own: a job's callback never silences the tenant's. Both are signed with the
tenant's webhook secret (its profile's `webhook_secret`, else `BULKLICENSE_WEBHOOK_SECRET`).

The trigger (`NotifyOnEnd`, where chunks run) keeps the notification in the outbox and queues its
task; a notifications worker runs it (`Notifier.deliver`): the first attempt renders the body and
splits it into one delivery per callback, and each attempt goes out through `webhooks.sender`
(one total deadline, a capped answer). A connection error, a timeout, a 408, a 429 or a 5xx is
tried again with exponential backoff, from the outbox. Nothing here ever blocks or fails the job.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import redis

from config import Settings
from config.logs import log_context
from jobs.events import JobEvent
from jobs.models import UserResult
from jobs.outbox import Outbox
from jobs.seats import seat_table, with_seats
from jobs.store import JobStore
from webhooks.policy import CallbackCheckBusy, CallbackPolicy, CallbackRefused
from webhooks.sender import Sender, http_client
from webhooks.signing import signature_headers

log = logging.getLogger(__name__)

# Each retry waits this many times longer than the one before.
BACKOFF_FACTOR = 3.0
BACKOFF_JITTER = 0.2
NOTIFIED_EVENTS = frozenset({JobEvent.FINISHED, JobEvent.PAUSED, JobEvent.AWAITING_APPROVAL, JobEvent.APPROVED,
                             JobEvent.REJECTED})
# An attempt under way is not sent again by the outbox's sweeper before this: well beyond a
# deadline, and beyond the time a task may wait in a busy notifications queue.
LEASE_S = 300.0


class Destination(StrEnum):
    """Which callback a delivery goes to."""

    JOB = "job"  # the job's own callback_url
    TENANT = "tenant"  # the tenant profile's callback_url


class DeliveryOutcome(StrEnum):
    """What became of one attempt."""

    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"  # refused by the receiver, or out of attempts
    REFUSED = "refused"  # the URL may not be used (any more)
    SKIPPED = "skipped"  # nowhere to send it, no secret to sign it, or done already
    DEFERRED = "deferred"  # the job store did not answer: the outbox sends it again later


@dataclass(frozen=True)
class Delivery:
    """One notification on its way: the job and event; from the first attempt on, one callback and its body."""

    job_id: str
    event: JobEvent
    delivery_id: str  # the outbox entry, and X-BulkLicense-Delivery (the same across retries)
    to: Destination | None = None  # None until the first attempt splits it per callback
    attempt: int = 1
    body: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The task's argument, and the outbox's payload."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Delivery:
        """Inverse of `to_json` (a message queued before deliveries had ids gets an empty one)."""
        to = data.get("to")
        return cls(job_id=str(data["job_id"]), event=JobEvent(data["event"]),
                   delivery_id=str(data.get("delivery_id") or ""), to=Destination(to) if to else None,
                   attempt=int(data.get("attempt", 1)), body=data.get("body"))


def new_delivery(job_id: str, event: JobEvent) -> Delivery:
    """A notification of `event`, not yet split per callback."""
    return Delivery(job_id, event, uuid.uuid4().hex)


Observe = Callable[[DeliveryOutcome], None]


@dataclass(frozen=True)
class Retries:
    """How often, and after how long, a delivery is tried again."""

    max_attempts: int = 5
    backoff_base_s: float = 10.0
    rng: random.Random = field(default_factory=random.Random)

    def wait_s(self, attempt: int) -> float:
        """The wait after failed attempt `attempt` (1-based): base × 3^(attempt-1), ±20 %."""
        wait_s = self.backoff_base_s * BACKOFF_FACTOR ** (attempt - 1)
        return wait_s * self.rng.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)


class Notifier:
    """Runs the attempts of notifications: splits them per callback, signs, sends, schedules retries."""

    def __init__(self, store: JobStore, outbox: Outbox, *, policy: CallbackPolicy, sender: Sender,
                 secret_for: Callable[[str], bytes | None], tenant_url: Callable[[str], str | None],
                 timeout_s: float = 10.0, legacy_signature: bool = True, retries: Retries | None = None,
                 lease_s: float = LEASE_S, clock: Callable[[], float] = time.time,
                 observe: Observe = lambda _: None) -> None:
        self.store = store
        self.outbox = outbox
        self._policy = policy
        self._sender = sender
        self._secret_for = secret_for
        self._tenant_url = tenant_url
        self._timeout_s = timeout_s
        self._legacy = legacy_signature
        self._retries = retries or Retries()
        self.lease_s = lease_s
        self._clock = clock
        self._observe = observe

    @classmethod
    def from_settings(cls, settings: Settings, store: JobStore, outbox: Outbox, *,
                      observe: Observe = lambda _: None) -> Notifier:
        """A notifier with its own HTTP client; secrets and tenant callbacks read from the profiles in force."""
        return cls(store, outbox, policy=CallbackPolicy.from_settings(settings,
                                                                      per_caller=settings.webhook_dns_concurrency),
                   sender=Sender(http_client(settings.webhook_ca_file)), secret_for=tenant_secrets(settings),
                   tenant_url=tenant_callbacks(settings), timeout_s=settings.webhook_timeout_s,
                   legacy_signature=settings.webhook_legacy_signature,
                   retries=Retries(settings.webhook_max_attempts, settings.webhook_backoff_base_s), observe=observe)

    def close(self) -> None:
        """Release the HTTP connections."""
        self._sender.close()

    def deliver(self, delivery: Delivery) -> list[DeliveryOutcome]:
        """Run the delivery's attempt (for a new notification, one per callback). Never raises for the receiver."""
        with log_context(job=delivery.job_id):
            try:
                outcomes = self._deliver(delivery)
            except redis.RedisError as exc:
                log.warning("notification of job %s (%s) deferred: the job store did not answer (%s); it is sent"
                            " again from the outbox", delivery.job_id, delivery.event, type(exc).__name__)
                outcomes = [DeliveryOutcome.DEFERRED]
        for outcome in outcomes:
            self._observe(outcome)
        return outcomes

    def _deliver(self, delivery: Delivery) -> list[DeliveryOutcome]:
        if not delivery.delivery_id:  # queued before the outbox kept notifications
            delivery = replace(delivery, delivery_id=uuid.uuid4().hex)
            self.outbox.put({delivery.delivery_id: (delivery.to_json(), self.lease_s)})
        payload = self.outbox.take(delivery.delivery_id, self.lease_s)
        if payload is None:
            return [DeliveryOutcome.SKIPPED]  # done already: this message was a duplicate
        delivery = Delivery.from_json(payload)  # the outbox's copy is the current one (attempt, body)
        if delivery.to is None:
            return self._split(delivery)
        return [self._attempt(delivery)]

    def _split(self, delivery: Delivery) -> list[DeliveryOutcome]:
        """Render the body, and make one delivery of it per callback URL; each is attempted now."""
        job = self.store.job(delivery.job_id)
        tenant = job.tenant if job is not None else ""
        job_url, tenant_url = (job.spec.callback_url if job is not None else None), self._tenant_url(tenant)
        destinations = [d for d, url in ((Destination.JOB, job_url), (Destination.TENANT, tenant_url))
                        if url and not (d is Destination.TENANT and url == job_url)]
        body = self._render(delivery.job_id) if destinations and self._signable(delivery, tenant) else None
        if body is None:
            self.outbox.done(delivery.delivery_id)
            return [DeliveryOutcome.SKIPPED]
        parts = [replace(delivery, to=to, body=body, delivery_id=uuid.uuid4().hex) for to in destinations]
        self.outbox.put({p.delivery_id: (p.to_json(), self.lease_s) for p in parts}, done=delivery.delivery_id)
        return [self._attempt(part) for part in parts]

    def _signable(self, delivery: Delivery, tenant: str) -> bool:
        if self._secret_for(tenant) is None:
            log.warning("job %s has a callback URL but no webhook secret applies to tenant %s: not notified",
                        delivery.job_id, tenant)
            return False
        return True

    def _attempt(self, delivery: Delivery) -> DeliveryOutcome:
        """One attempt of a delivery to one callback; the outbox learns what comes next."""
        assert delivery.body is not None and delivery.to is not None
        started = time.monotonic()
        job = self.store.job(delivery.job_id)
        tenant = job.tenant if job is not None else ""
        url = (job.spec.callback_url if job is not None else None) if delivery.to is Destination.JOB \
            else self._tenant_url(tenant)
        secret = self._secret_for(tenant)
        if not url or secret is None:  # the profile changed since: its callback or secret is gone
            self.outbox.done(delivery.delivery_id)
            return DeliveryOutcome.SKIPPED
        try:
            target = self._policy.target(url, timeout_s=self._timeout_s)
        except CallbackRefused as exc:
            log.warning("notification of job %s (%s) not sent to the %s callback: %s", delivery.job_id,
                        delivery.event, delivery.to, exc)
            self.outbox.done(delivery.delivery_id)
            return DeliveryOutcome.REFUSED
        except CallbackCheckBusy as exc:
            return self._after_failure(delivery, f"the {delivery.to} callback", True, str(exc))
        body = delivery.body.encode()
        headers = signature_headers(secret, timestamp=int(self._clock()), delivery_id=delivery.delivery_id,
                                    event=delivery.event.value, body=body, legacy=self._legacy)
        left_s = max(0.0, self._timeout_s - (time.monotonic() - started))
        answer = self._sender.post(target, body, headers, timeout_s=left_s)
        if answer.accepted:
            log.info("notification of job %s (%s) delivered to %s (attempt %d)", delivery.job_id, delivery.event,
                     target.display, delivery.attempt)
            self.outbox.done(delivery.delivery_id)
            return DeliveryOutcome.DELIVERED
        return self._after_failure(delivery, target.display, answer.retryable, str(answer))

    def _after_failure(self, delivery: Delivery, where: str, retryable: bool, why: str) -> DeliveryOutcome:
        """Give up, or keep the next attempt in the outbox, due after the backoff."""
        if not retryable or delivery.attempt >= self._retries.max_attempts:
            log.warning("notification of job %s (%s) to %s failed after %d attempt(s): %s", delivery.job_id,
                        delivery.event, where, delivery.attempt, why)
            self.outbox.done(delivery.delivery_id)
            return DeliveryOutcome.FAILED
        wait_s = self._retries.wait_s(delivery.attempt)
        log.info("notification of job %s (%s) to %s: %s; attempt %d in %.1fs", delivery.job_id, delivery.event,
                 where, why, delivery.attempt + 1, wait_s)
        following = replace(delivery, attempt=delivery.attempt + 1)
        self.outbox.put({following.delivery_id: (following.to_json(), wait_s)})
        return DeliveryOutcome.RETRYING

    def _render(self, job_id: str) -> str | None:
        """The job as GET /v1/jobs/{id} shows it; a plan's seat table, which needs Graph, is left to that call."""
        progress = self.store.progress(job_id)
        if progress is None:
            return None
        # As GET answers when Graph cannot be asked: no seat table unless the plan needs and frees no seat.
        lines = seat_table(progress.plan, None, dict) if progress.plan is not None else None
        return json.dumps(with_seats(progress.to_json(), lines), separators=(",", ":"))


def tenant_secrets(settings: Settings) -> Callable[[str], bytes | None]:
    """A tenant's webhook secret as the profiles in force have it (its own, else the global one)."""
    def secret_for(tenant: str) -> bytes | None:
        secret = settings.webhook_secret_for(tenant)
        return secret.get_secret_value().encode() if secret is not None else None

    return secret_for


def tenant_callbacks(settings: Settings) -> Callable[[str], str | None]:
    """A tenant's callback URL as the profiles in force have it."""
    def tenant_url(tenant: str) -> str | None:
        profile = settings.tenants.get(tenant)
        return profile.callback_url if profile is not None else None

    return tenant_url


@dataclass(frozen=True)
class NotifyOnEnd:
    """The job-side trigger: keeps a notification in the outbox and queues it when a job ends or pauses."""

    outbox: Outbox
    enqueue: Callable[[Delivery], None]
    enabled: Callable[[str], bool]  # whether a tenant's notifications can be signed
    lease_s: float = LEASE_S
    events: frozenset[JobEvent] = field(default=NOTIFIED_EVENTS)

    def job_event(self, job_id: str, tenant: str, event: JobEvent, _details: Mapping[str, Any]) -> None:
        """Keep and queue the notification; whether the job has a callback is for its first attempt to find."""
        if event not in self.events or not self.enabled(tenant):
            return
        delivery = new_delivery(job_id, event)
        self.outbox.put({delivery.delivery_id: (delivery.to_json(), self.lease_s)})
        try:
            self.enqueue(delivery)
        except Exception as exc:  # the broker is away: the outbox sends it once the lease is over
            log.warning("notification of job %s (%s) not queued now (%s); the outbox sends it later", job_id,
                        event, type(exc).__name__)

    def users_finished(self, _job_id: str, _tenant: str, _results: Sequence[UserResult]) -> None:
        """Not notified."""
