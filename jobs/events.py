"""What happens to jobs, told to whoever listens: the audit trail, notifications, metrics.

The job domain emits; listeners are plugged in by the process (worker or API). A listener never
fails or slows a job: each call is guarded, and a listener that needs the network queues its work.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol

from jobs.models import UserResult

log = logging.getLogger(__name__)


class JobEvent(StrEnum):
    """A step in a job's life."""

    PLAN_FINISHED = "plan_finished"  # every user has been read and planned
    STARTED = "started"  # the first write went out
    PAUSED = "paused"
    RESUMED = "resumed"
    FINISHED = "finished"  # every user has a terminal result (dry runs included)
    AWAITING_APPROVAL = "awaiting_approval"  # planned, and waits for another key's approval (jobs.approval)
    APPROVED = "approved"  # another key approved it: its run started (told by the API, which audits it)
    REJECTED = "rejected"  # another key rejected it: it ended cancelled (told by the API, which audits it)


class JobListener(Protocol):
    """Receives job events and finished users."""

    def job_event(self, job_id: str, tenant: str, event: JobEvent, details: Mapping[str, Any]) -> None:
        """A job reached `event`; `details` are small and JSON-able (counts, a pause reason)."""
        ...

    def users_finished(self, job_id: str, tenant: str, results: Sequence[UserResult]) -> None:
        """Users reached a terminal state (recorded just now)."""
        ...


class Listeners:
    """Fans events out to listeners; a failing listener is logged and skipped, never raised."""

    def __init__(self, listeners: Sequence[JobListener] = ()) -> None:
        self._listeners = tuple(listeners)

    def job_event(self, job_id: str, tenant: str, event: JobEvent, details: Mapping[str, Any] | None = None) -> None:
        """Tell every listener that a job reached `event`."""
        for listener in self._listeners:
            try:
                listener.job_event(job_id, tenant, event, dict(details or {}))
            except Exception:  # a listener must not break a job
                log.exception("listener %s failed on %s of job %s", type(listener).__name__, event, job_id)

    def users_finished(self, job_id: str, tenant: str, results: Sequence[UserResult]) -> None:
        """Tell every listener that these users reached a terminal state."""
        if not results:
            return
        for listener in self._listeners:
            try:
                listener.users_finished(job_id, tenant, results)
            except Exception:  # a listener must not break a job
                log.exception("listener %s failed on results of job %s", type(listener).__name__, job_id)


NO_LISTENERS = Listeners()
