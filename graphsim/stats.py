"""Counters the control surface reports: requests by endpoint and status, reads, writes, 429s, a write log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# Bound on the write log so a long benchmark cannot exhaust memory.
MAX_WRITE_LOG = 2_000_000


class Stats:
    """Request counters since start or the last reset."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.by_endpoint: dict[str, dict[str, int]] = {}
        self.by_status: dict[str, int] = {}
        self.requests = 0
        self.writes_accepted = 0
        # Of those, the writes to groups (create, members, licenses, delete).
        self.group_writes_accepted = 0
        self.reads_accepted = 0
        self.reads_by_endpoint: dict[str, int] = {}
        self.reads_throttled = 0
        self.throttled_responses = 0
        # Resource units of the requests served, and of those refused with 429.
        self.resource_units_used = 0
        self.resource_units_refused = 0
        self.faults: dict[str, int] = {}
        self.writes_per_s: list[int] = []
        self.write_log: list[dict[str, Any]] = []

    def count(self, endpoint: str, status: int | str) -> None:
        """Count one response (a $batch item counts under its own endpoint too)."""
        self.requests += 1
        key = str(status)
        per = self.by_endpoint.setdefault(endpoint, {})
        per[key] = per.get(key, 0) + 1
        self.by_status[key] = self.by_status.get(key, 0) + 1

    def accept_read(self, endpoint: str, resource_units: int) -> None:
        """Count a read that passed throttling, and what it cost."""
        self.reads_accepted += 1
        self.reads_by_endpoint[endpoint] = self.reads_by_endpoint.get(endpoint, 0) + 1
        self.spend(resource_units)

    def spend(self, resource_units: int) -> None:
        """Count the resource units of a request that passed throttling."""
        self.resource_units_used += resource_units

    def refuse(self, resource_units: int, *, read: bool) -> None:
        """Count a request throttling refused (429)."""
        self.throttled_responses += 1
        self.resource_units_refused += resource_units
        if read:
            self.reads_throttled += 1

    def accept_write(self, resource_units: int = 1, *, group: bool = False) -> None:
        """Count a write that passed throttling (a group write also on its own), in its 1-second window."""
        self.writes_accepted += 1
        if group:
            self.group_writes_accepted += 1
        self.spend(resource_units)
        second = int(self._clock() - self.started)
        if second >= len(self.writes_per_s):
            self.writes_per_s.extend([0] * (second + 1 - len(self.writes_per_s)))
        self.writes_per_s[second] += 1

    def fault(self, name: str) -> None:
        """Count an injected fault."""
        self.faults[name] = self.faults.get(name, 0) + 1

    def log_write(self, entry: dict[str, Any]) -> None:
        """Record a write request that reached the simulator."""
        if len(self.write_log) < MAX_WRITE_LOG:
            self.write_log.append(entry)

    def snapshot(self) -> dict[str, Any]:
        """The JSON `GET /_sim/stats` returns."""
        return {
            "uptime_s": round(self._clock() - self.started, 3),
            "requests": self.requests,
            "writes_accepted": self.writes_accepted,
            "group_writes_accepted": self.group_writes_accepted,
            "reads_accepted": self.reads_accepted,
            "reads_by_endpoint": dict(self.reads_by_endpoint),
            "reads_throttled": self.reads_throttled,
            "throttled_responses": self.throttled_responses,
            "resource_units_used": self.resource_units_used,
            "resource_units_refused": self.resource_units_refused,
            "peak_writes_per_s": max(self.writes_per_s, default=0),
            "writes_per_s": list(self.writes_per_s),
            "by_endpoint": {k: dict(v) for k, v in self.by_endpoint.items()},
            "by_status": dict(self.by_status),
            "faults": dict(self.faults),
            "writes_logged": len(self.write_log),
        }
