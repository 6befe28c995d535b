"""Things due at a later time, kept in Redis until then: the one place delayed work waits.

A chunk handed back for a long Retry-After or a replication grace, or a notification waiting for
its next attempt, is not given to the broker with a countdown (a broker holds such a message in a
worker's memory until due, unacknowledged: RabbitMQ cancels the consumer after its
consumer_timeout, Redis redelivers it after the visibility timeout). It waits here instead, and
workers poll for what is due and send it on. Redis is the only record: no timer in any process.

Members are opaque strings their owner makes unique. Taking what is due does not delete it: it
moves it `lease_s` into the future, and the taker removes it once it has handed it on, so a taker
that dies in between leaves it to be taken again after the lease (at least once: takers must
accept a duplicate).

Keys:

    bl:due   zset   member -> due time (epoch seconds)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

import redis

from jobs.scripts import lua_script

DUE_KEY = "bl:due"


class DueSet:
    """A sorted set of members by due time, shared by every process."""

    def __init__(self, client: redis.Redis, *, key: str = DUE_KEY, clock: Callable[[], float] = time.time) -> None:
        self.redis = client
        self.key = key
        self.clock = clock
        self._take = lua_script(client, "due_take")

    def add(self, member: str, due_at: float) -> None:
        """Keep `member` until `due_at` (epoch seconds)."""
        self.redis.zadd(self.key, {member: due_at})

    def take(self, *, lease_s: float, limit: int = 100) -> list[str]:
        """Members due now (at most `limit`, the earliest first), leased: each is due again after `lease_s`."""
        now = self.clock()
        raw = cast(list[bytes], self._take(keys=[self.key], args=[repr(now), repr(now + lease_s), limit]))
        return [m.decode() for m in raw]

    def done(self, member: str) -> None:
        """A member taken was handed on: forget it."""
        self.redis.zrem(self.key, member)

    def count(self) -> int:
        """How many members wait (leased ones included)."""
        return int(self.redis.zcard(self.key))
