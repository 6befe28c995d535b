"""The audit trail: an append-only log, per tenant, of who did what to which job.

Keys:

    bl:audit:{tenant}                         stream  one entry per event: time, tenant, actor, action, job,
                                                      details (JSON)
    bl:audit-refused:{tenant}                 stream  `key_refused` and `approval_refused` events, apart: a
                                                      flood of refused requests never pushes the real trail out
    bl:audit-refused-gate:{tenant}:{actor}    string  set while one key's refusals are being collapsed
    bl:audit-refused-count:{tenant}:{actor}   string  that key's refusals not recorded on their own since
    bl:audit-trimmed                          hash    tenant -> events the size bound pushed out of its trail

An entry's stream id is the appending process's clock in milliseconds (moved forward when needed so
ids never go backwards), so reading by time is a range over ids. Each append trims the stream to
about `max_events` entries (the refusals stream: `max_refusals`) and drops those older than the
retention period; a stream nobody appended to for that long expires whole. Actors are API key names
(never keys) or `system`.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

import redis

from config import Settings
from jobs.models import iso_time
from jobs.scripts import lua_script

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"  # the actor of events the workers record
MAX_DETAILS_BYTES = 4096
# A key refused for a tenant is recorded at most once per window; its later refusals are counted.
REFUSAL_WINDOW_S = 60.0
TRIMMED_KEY = "bl:audit-trimmed"
READ_PAGE_SIZE = 500
EPOCH_SECONDS = re.compile(r"\d{1,12}(\.\d+)?")


class AuditAction(StrEnum):
    """What an audit event records."""

    SUBMITTED = "submitted"
    PLAN_FINISHED = "plan_finished"
    STARTED = "started"
    PAUSED = "paused"
    RESUMED = "resumed"
    CANCELLED = "cancelled"
    FINISHED = "finished"
    ROLLBACK_REQUESTED = "rollback_requested"
    KEY_REFUSED = "key_refused"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    REJECTED = "rejected"
    APPROVAL_REFUSED = "approval_refused"  # kept with the refusals: anyone with a key of the tenant can cause it


@dataclass(frozen=True)
class AuditEvent:
    """One stored event; `id` is its stream id, `action` an AuditAction value (kept as read)."""

    id: str
    time: str
    tenant: str
    actor: str
    action: str
    job: str | None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The event as the API writes it."""
        return {"id": self.id, "time": self.time, "tenant": self.tenant, "actor": self.actor,
                "action": self.action, "job": self.job, "details": dict(self.details)}

    @classmethod
    def from_entry(cls, entry_id: bytes, fields: Mapping[bytes, bytes]) -> AuditEvent:
        """An event from a stream entry."""
        text = {k.decode(): v.decode() for k, v in fields.items()}
        return cls(id=entry_id.decode(), time=text.get("time", ""), tenant=text.get("tenant", ""),
                   actor=text.get("actor", ""), action=text.get("action", ""), job=text.get("job") or None,
                   details=json.loads(text.get("details") or "{}"))

    @property
    def order(self) -> tuple[int, int]:
        """Its place in time: (milliseconds, sequence) from the stream id."""
        ms, _, seq = self.id.partition("-")
        return int(ms), int(seq or 0)


class AuditLog:
    """Appends audit events and reads them back, oldest first, a page at a time."""

    def __init__(self, client: redis.Redis, *, max_events: int, retention_s: int, max_refusals: int = 10_000,
                 clock: Callable[[], float] = time.time, page_size: int = READ_PAGE_SIZE,
                 refusal_window_s: float = REFUSAL_WINDOW_S) -> None:
        self.redis = client
        self.max_events = max_events
        self.max_refusals = max_refusals
        self.retention_s = retention_s
        self.clock = clock
        self.page_size = page_size
        self.refusal_window_s = refusal_window_s
        self._append = lua_script(client, "audit_append")

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> AuditLog:
        """The audit log with the configured size bounds and retention."""
        return cls(client, max_events=settings.audit_max_events, max_refusals=settings.audit_max_refusals,
                   retention_s=settings.retention_s)

    @staticmethod
    def stream_key(tenant: str) -> str:
        """The tenant's stream."""
        return f"bl:audit:{tenant}"

    @staticmethod
    def refusals_key(tenant: str) -> str:
        """The tenant's stream of refused requests."""
        return f"bl:audit-refused:{tenant}"

    def append(self, tenant: str, actor: str, action: AuditAction, *, job: str | None = None,
               details: Mapping[str, Any] | None = None) -> str:
        """Record one event; returns its stream id. ValueError when details are too big for an event."""
        entry_id, trimmed = self._add(self.stream_key(tenant), self.max_events, tenant, actor, action, job, details,
                                      counted_as=tenant)
        if trimmed:
            log.warning("the audit trail of tenant %s is full (BULKLICENSE_AUDIT_MAX_EVENTS=%d): its %d oldest"
                        " events were dropped", tenant, self.max_events, trimmed)
        return entry_id

    def refused(self, tenant: str, actor: str, details: Mapping[str, Any], *,
                action: AuditAction = AuditAction.KEY_REFUSED, job: str | None = None) -> str | None:
        """Record that `actor` was refused (access to `tenant`, or `action`): at most one event per key, tenant,
        action and window.

        Kept in the tenant's refusals stream, so that no number of refusals evicts the real trail.
        The refusals in between are counted, and the next event of that key says how many
        (`suppressed`). Returns the event's id, or None when this refusal was only counted.
        """
        suffix = f"{tenant}:{actor}" if action is AuditAction.KEY_REFUSED else f"{tenant}:{actor}:{action.value}"
        gate, pending = f"bl:audit-refused-gate:{suffix}", f"bl:audit-refused-count:{suffix}"
        if not self.redis.set(gate, 1, nx=True, px=max(1, int(self.refusal_window_s * 1000))):
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(pending)
            pipe.expire(pending, self.retention_s)
            pipe.execute()
            return None
        suppressed = int(cast(bytes | None, self.redis.getdel(pending)) or 0)
        entry_id, _ = self._add(self.refusals_key(tenant), self.max_refusals, tenant, actor, action,
                                job, {**details, "suppressed": suppressed})
        return entry_id

    def trimmed(self) -> dict[str, int]:
        """Per tenant, how many events its trail lost to the size bound (ever: a counter)."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(TRIMMED_KEY))
        return {tenant.decode(): int(n) for tenant, n in raw.items()}

    def _add(self, key: str, max_events: int, tenant: str, actor: str, action: AuditAction, job: str | None,
             details: Mapping[str, Any] | None, *, counted_as: str = "") -> tuple[str, int]:
        """Append an event to a stream; returns its id and how many old events the size bound trimmed."""
        if not tenant or not actor:
            raise ValueError("an audit event needs a tenant and an actor")
        encoded = json.dumps(dict(details or {}), separators=(",", ":"), sort_keys=True)
        if len(encoded) > MAX_DETAILS_BYTES:
            raise ValueError(f"audit details are limited to {MAX_DETAILS_BYTES} bytes")
        now = self.clock()
        fields = ["time", iso_time(now), "tenant", tenant, "actor", actor, "action", AuditAction(action).value,
                  "job", job or "", "details", encoded]
        oldest_ms = max(0, _ms(now - self.retention_s))
        entry_id, trimmed = self._append(keys=[key, TRIMMED_KEY],
                                         args=[_ms(now), max_events, oldest_ms, self.retention_s, counted_as, *fields])
        return (entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)), int(trimmed)

    def events(self, tenants: Iterable[str], *, since: float | None = None, until: float | None = None,
               job: str | None = None) -> Iterator[AuditEvent]:
        """The tenants' events from `since` to `until` (epoch seconds, both included), oldest first."""
        start = "-" if since is None else str(max(0, _ms(since)))
        end = "+" if until is None else str(max(0, _ms(until)))
        streams = [self._stream_events(key, start, end) for tenant in sorted(set(tenants))
                   for key in (self.stream_key(tenant), self.refusals_key(tenant))]
        for event in heapq.merge(*streams, key=lambda e: e.order):
            if job is None or event.job == job:
                yield event

    def _stream_events(self, key: str, start: str, end: str) -> Iterator[AuditEvent]:
        """One stream's events in the id range, read a page at a time."""
        while True:
            page = cast(list[tuple[bytes, dict[bytes, bytes]]],
                        self.redis.xrange(key, min=start, max=end, count=self.page_size))
            for entry_id, fields in page:
                yield AuditEvent.from_entry(entry_id, fields)
            if len(page) < self.page_size:
                return
            start = "(" + page[-1][0].decode()


def parse_instant(text: str) -> float:
    """An instant as epoch seconds, from ISO-8601 (UTC unless an offset is given) or epoch seconds."""
    text = text.strip()
    if EPOCH_SECONDS.fullmatch(text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"'{text[:64]}' is neither an ISO-8601 time nor epoch seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _ms(seconds: float) -> int:
    """Whole milliseconds of an epoch time (rounded to the microsecond first, against float error)."""
    return math.floor(round(seconds * 1000, 3))
