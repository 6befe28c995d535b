"""Fair dispatch of chunks to the broker, and recovery of chunks whose worker died.

Policy: the broker never holds a whole job. A new job enqueues a window of `chunk_window` chunks;
each chunk that finishes enqueues the job's next one. So every active job has at most a window of
chunks queued or running, whatever its size: a 10-user job submitted behind a 20,000-user
migration waits for at most one chunk of it per worker slot, and jobs of different tenants
interleave in the queue instead of one waiting behind the other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from graphclient.breaker import BreakerState
from jobs.events import NO_LISTENERS, JobEvent, Listeners
from jobs.models import PauseReason
from jobs.store import JobStore

log = logging.getLogger(__name__)


class Send(Protocol):
    """Puts the task for chunk `n` of a job on the broker, due after `countdown_s`.

    `budget_started_at` carries a handed-back chunk's retry budget over to its next run (None
    starts a fresh one). The API, the scheduler and the chunk task all enqueue through this.
    """

    def __call__(self, job_id: str, n: int, countdown_s: float, budget_started_at: float | None = None) -> None:
        ...


def dispatch(store: JobStore, send: Send, job_id: str, count: int) -> int:
    """Enqueue up to `count` more chunks of a job; returns how many were sent."""
    sent = 0
    for _ in range(count):
        n = store.next_chunk(job_id)
        if n is None:
            break
        send(job_id, n, 0.0)
        sent += 1
    return sent


def reap(store: JobStore, send: Send, *, requeue_after_s: float) -> int:
    """Requeue chunks orphaned by dead workers or lost messages; returns how many."""
    requeued = 0
    for job_id in store.active_jobs():
        for n, seen in store.orphaned_chunks(job_id, requeue_after_s=requeue_after_s):
            if store.reclaim(job_id, n, seen):
                log.warning("requeueing chunk %s of job %s (was %s)", n, job_id, seen.split(":")[0])
                send(job_id, n, 0.0)
                requeued += 1
    return requeued


@dataclass(frozen=True)
class ProbeAnswer:
    """A probe's verdict on a paused job: go on now, or look again at `next_probe_at` (None: the usual interval)."""

    resume: bool
    next_probe_at: float | None = None


class Probe(Protocol):
    """Whether a paused job may go on now: `(job_id, tenant, reason) -> ProbeAnswer` (may ask Graph)."""

    def __call__(self, job_id: str, tenant: str, reason: str) -> ProbeAnswer:
        ...


def resume_due(store: JobStore, send: Send, probe: Probe, *, now: float, retry_in_s: float,
               events: Listeners = NO_LISTENERS) -> int:
    """Resume paused jobs whose probe time has come and whose cause is gone; returns how many.

    A job whose cause persists is probed again when the probe says, else after `retry_in_s`. Jobs
    paused without a probe time (a refused credential, a denied app) wait for someone to resume them.
    """
    resumed = 0
    for job_id in store.paused_jobs():
        fields = store.job_fields(job_id, "tenant", "paused_reason", "next_probe_at", "paused_message")
        if "paused_reason" not in fields or "next_probe_at" not in fields:
            continue
        if float(fields["next_probe_at"]) > now:
            continue
        try:
            answer = probe(job_id, fields.get("tenant", ""), fields["paused_reason"])
        except Exception as exc:  # one job's failed probe must not hold back the others
            log.warning("probe of paused job %s failed: %s", job_id, exc)
            answer = ProbeAnswer(False)
        if not answer.resume:
            store.pause(job_id, fields["paused_reason"], fields.get("paused_message", ""),
                        next_probe_at=answer.next_probe_at or now + retry_in_s)
            continue
        for n in store.resume(job_id) or ():
            send(job_id, n, 0.0)
        events.job_event(job_id, fields.get("tenant", ""), JobEvent.RESUMED,
                         {"reason": fields["paused_reason"], "by": "probe"})
        log.info("job %s resumed: %s is over", job_id, fields["paused_reason"])
        resumed += 1
    return resumed


def pause_unreachable(store: JobStore, breaker_state: Callable[[str], BreakerState | None], *,
                      events: Listeners = NO_LISTENERS) -> int:
    """Pause the running jobs of tenants Graph does not answer for (their breaker is open); returns how many.

    Their chunks stop at their next call or write batch and park; `resume_due` resumes the jobs
    once the breaker has closed. `breaker_state(tenant)` is None for a tenant no longer configured.
    """
    paused = 0
    states: dict[str, BreakerState | None] = {}
    for job_id in store.active_jobs():
        fields = store.job_fields(job_id, "tenant", "paused_reason", "cancel_requested")
        if "paused_reason" in fields or "cancel_requested" in fields or "tenant" not in fields:
            continue
        tenant = fields["tenant"]
        if tenant not in states:
            states[tenant] = breaker_state(tenant)
        state = states[tenant]
        if state is not None and state.open and store.pause(
                job_id, PauseReason.GRAPH_UNAVAILABLE, state.message, next_probe_at=state.next_probe_at):
            events.job_event(job_id, tenant, JobEvent.PAUSED,
                             {"reason": PauseReason.GRAPH_UNAVAILABLE.value, "message": state.message})
            log.info("job %s paused: %s", job_id, state.message)
            paused += 1
    return paused
