"""The audit trail: an append-only log, per tenant, of who did what to which job.

Keys:

    bl:audit:{tenant}   stream  one entry per event: time, tenant, actor, action, job, details (JSON)

An entry's stream id is the appending process's clock in milliseconds (moved forward when needed so
ids never go backwards), so reading by time is a range over ids. Each append trims the stream to
about `max_events` entries and drops those older than the retention period; a stream nobody
appended to for that long expires whole. Actors are API key names (never keys) or `system`.
"""

from __future__ import annotations

import heapq
import json
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

SYSTEM_ACTOR = "system"  # the actor of events the workers record
MAX_DETAILS_BYTES = 4096
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

    def __init__(self, client: redis.Redis, *, max_events: int, retention_s: int,
                 clock: Callable[[], float] = time.time, page_size: int = READ_PAGE_SIZE) -> None:
        self.redis = client
        self.max_events = max_events
        self.retention_s = retention_s
        self.clock = clock
        self.page_size = page_size
        self._append = lua_script(client, "audit_append")

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> AuditLog:
        """The audit log with the configured size bound and retention."""
        return cls(client, max_events=settings.audit_max_events, retention_s=settings.retention_s)

    @staticmethod
    def stream_key(tenant: str) -> str:
        """The tenant's stream."""
        return f"bl:audit:{tenant}"

    def append(self, tenant: str, actor: str, action: AuditAction, *, job: str | None = None,
               details: Mapping[str, Any] | None = None) -> str:
        """Record one event; returns its stream id. ValueError when details are too big for an event."""
        if not tenant or not actor:
            raise ValueError("an audit event needs a tenant and an actor")
        encoded = json.dumps(dict(details or {}), separators=(",", ":"), sort_keys=True)
        if len(encoded) > MAX_DETAILS_BYTES:
            raise ValueError(f"audit details are limited to {MAX_DETAILS_BYTES} bytes")
        now = self.clock()
        fields = ["time", iso_time(now), "tenant", tenant, "actor", actor, "action", AuditAction(action).value,
                  "job", job or "", "details", encoded]
        oldest_ms = max(0, _ms(now - self.retention_s))
        result = self._append(keys=[self.stream_key(tenant)],
                              args=[_ms(now), self.max_events, oldest_ms, self.retention_s, *fields])
        return result.decode() if isinstance(result, bytes) else str(result)

    def events(self, tenants: Iterable[str], *, since: float | None = None, until: float | None = None,
               job: str | None = None) -> Iterator[AuditEvent]:
        """The tenants' events from `since` to `until` (epoch seconds, both included), oldest first."""
        start = "-" if since is None else str(max(0, _ms(since)))
        end = "+" if until is None else str(max(0, _ms(until)))
        streams = [self._tenant_events(tenant, start, end) for tenant in sorted(set(tenants))]
        for event in heapq.merge(*streams, key=lambda e: e.order):
            if job is None or event.job == job:
                yield event

    def _tenant_events(self, tenant: str, start: str, end: str) -> Iterator[AuditEvent]:
        """One tenant's events in the id range, read a page at a time."""
        key = self.stream_key(tenant)
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
