"""Notifications not yet done, kept in Redis until they are, so that none is lost on the way.

Each entry is a payload (a notification's next attempt, JSON) and the time by which it must be
sent again if nothing finished it: a new entry is due after a lease (its task is on its way), a
retry when its backoff ends. Whoever runs an attempt takes the entry for a lease first; a worker
killed mid-attempt, a broker or Redis outage, or a task message lost leaves the entry in place,
and the sweeper (`due`) sends it again once it is overdue. Sending twice is possible, losing is not:
receivers drop duplicates by delivery id.

Keys: `bl:notify:due` (zset: id -> due time) and `bl:notify:{id}` (the payload, expiring after
the retention period).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import redis

from jobs.store import _lua

DUE_KEY = "bl:notify:due"
PAYLOAD_PREFIX = "bl:notify:"


class Outbox:
    """Pending notification attempts in Redis, each with the time it is sent again unless done."""

    def __init__(self, client: redis.Redis, *, retention_s: int, clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.retention_s = retention_s
        self.clock = clock
        self._due = client.register_script(_lua("outbox_due"))

    def put(self, entries: Mapping[str, tuple[Mapping[str, Any], float]], *, done: str | None = None) -> None:
        """Keep each entry (id -> (payload, due in seconds)), and drop `done`, in one step."""
        now = self.clock()
        pipe = self.redis.pipeline(transaction=True)
        for entry_id, (payload, due_in_s) in entries.items():
            pipe.set(PAYLOAD_PREFIX + entry_id, json.dumps(payload, separators=(",", ":")), ex=self.retention_s)
            pipe.zadd(DUE_KEY, {entry_id: now + due_in_s})
        if done is not None:
            self._drop(pipe, done)
        pipe.execute()

    def take(self, entry_id: str, lease_s: float) -> dict[str, Any] | None:
        """The entry's payload, now not due again before `lease_s`; None when it is done (or unknown)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(PAYLOAD_PREFIX + entry_id)
        pipe.zadd(DUE_KEY, {entry_id: self.clock() + lease_s}, xx=True)
        payload, _ = pipe.execute()
        if payload is None:
            self.redis.zrem(DUE_KEY, entry_id)
            return None
        data: dict[str, Any] = json.loads(payload)
        return data

    def done(self, entry_id: str) -> None:
        """The entry needs nothing more."""
        pipe = self.redis.pipeline(transaction=True)
        self._drop(pipe, entry_id)
        pipe.execute()

    def due(self, lease_s: float, limit: int = 100) -> list[dict[str, Any]]:
        """Entries overdue now, each taken for `lease_s` (the sweeper sends them again)."""
        now = self.clock()
        taken = cast(list[bytes], self._due(keys=[DUE_KEY], args=[now, now + lease_s, limit, PAYLOAD_PREFIX]))
        return [json.loads(payload) for payload in taken]

    def pending(self) -> int:
        """How many entries are waiting or under way."""
        return int(self.redis.zcard(DUE_KEY))

    @staticmethod
    def _drop(pipe: redis.client.Pipeline, entry_id: str) -> None:
        pipe.delete(PAYLOAD_PREFIX + entry_id)
        pipe.zrem(DUE_KEY, entry_id)
