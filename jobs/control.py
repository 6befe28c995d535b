"""Steering a job after submission: cancel it, resume it (by request or when a probe finds its cause gone),
and pause the jobs of tenants Graph stopped answering for.

A paused job's chunks are parked; resuming requeues them and sends each to the broker again. A
cancel resumes them too: they run once more, only to record their users as cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from graphclient.breaker import BreakerState
from jobs.events import NO_LISTENERS, JobEvent, Listeners
from jobs.lifecycle import ClaimResult
from jobs.models import PauseReason
from jobs.scheduler import Send
from jobs.seats import SeatLedger
from jobs.steps import cancelled
from jobs.store import JobStore

log = logging.getLogger(__name__)


def resume(store: JobStore, send: Send, job_id: str) -> list[int] | None:
    """Clear the job's pause and send its parked chunks again; returns them (None: the job was not paused)."""
    chunks = store.resume(job_id)
    for n in chunks or ():
        send(job_id, n, 0.0)
    return chunks


def cancel(store: JobStore, send: Send, job_id: str) -> None:
    """Flag the job as cancelled (no write registered after this goes out) and run its parked chunks once more."""
    store.request_cancel(job_id)
    resume(store, send, job_id)


# Who holds a held chunk's claim while its rows are cancelled (no heartbeat: the reaper requeues it
# should the cancel die half-way, and the chunk's run then ends what is left of it).
CANCEL_CLAIMANT = "cancel"


def cancel_held(store: JobStore, send: Send, job_id: str, *, now: float) -> int:
    """Cancel the rows of a job still waiting for their day: each is recorded cancelled now and nothing is
    written for it; returns how many. The job's other rows go on (`cancel` stops them too).

    Each such chunk is then sent at once: a worker finds every row ended and completes it, so that
    the job's end is recorded, its seats released and its listeners told as for any job.
    """
    job = store.job(job_id)
    if job is None or job.held_from is None:
        return 0
    count = 0
    for day in job.spec.schedule:
        if day.due_at is None or day.due_at <= now:
            continue
        for n in range(day.first_chunk, day.first_chunk + day.chunks):
            if store.claim_chunk(job_id, n, CANCEL_CLAIMANT) is not ClaimResult.OK:
                continue  # done already, or its day came and a worker runs it
            view = store.chunk_view(job_id, n)
            count += store.record_results(job_id, [cancelled(op, 0, now) for op in view.pending])
            store.release_chunk(job_id, n, CANCEL_CLAIMANT)
            send(job_id, n, 0.0)
    log.info("job %s: %d rows waiting for their day cancelled", job_id, count)
    return count


def settle_cancel(store: JobStore, seats: SeatLedger, job_id: str, tenant: str) -> int:
    """After a cancel: the write batches still in flight; once there are none, the job's seats are released."""
    in_flight = store.writes_in_flight(job_id)
    if not in_flight:
        seats.release_all(tenant, job_id)
    return in_flight


@dataclass(frozen=True)
class ProbeAnswer:
    """A probe's verdict on a paused job: go on now, or look again at `next_probe_at` (None: the usual interval)."""

    resume: bool
    next_probe_at: float | None = None


class Probe(Protocol):
    """Whether a paused job may go on now: `(job_id, tenant, reason) -> ProbeAnswer` (may ask Graph)."""

    def __call__(self, job_id: str, tenant: str, reason: PauseReason) -> ProbeAnswer:
        ...


def resume_due(store: JobStore, send: Send, probe: Probe, *, now: float, retry_in_s: float,
               events: Listeners = NO_LISTENERS) -> int:
    """Resume paused jobs whose probe time has come and whose cause is gone; returns how many.

    A job whose cause persists is probed again when the probe says, else after `retry_in_s`. Jobs
    paused without a probe time (a refused credential, a denied app) wait for someone to resume them.
    """
    resumed = 0
    for job_id in store.paused_jobs():
        job = store.job(job_id)
        pause = job.pause if job is not None else None
        if job is None or pause is None or pause.next_probe_at is None or pause.next_probe_at > now:
            continue
        try:
            answer = probe(job_id, job.tenant, pause.reason)
        except Exception as exc:  # one job's failed probe must not hold back the others
            log.warning("probe of paused job %s failed: %s", job_id, exc)
            answer = ProbeAnswer(False)
        if not answer.resume:
            store.pause(job_id, pause.reason, pause.message or "",
                        next_probe_at=answer.next_probe_at or now + retry_in_s)
            continue
        resume(store, send, job_id)
        events.job_event(job_id, job.tenant, JobEvent.RESUMED, {"reason": pause.reason.value, "by": "probe"})
        log.info("job %s resumed: %s is over", job_id, pause.reason.value)
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
        job = store.job(job_id)
        if job is None or job.pause is not None or job.cancel_requested or not job.tenant:
            continue
        if job.tenant not in states:
            states[job.tenant] = breaker_state(job.tenant)
        state = states[job.tenant]
        if state is not None and state.open and store.pause(
                job_id, PauseReason.GRAPH_UNAVAILABLE, state.message, next_probe_at=state.next_probe_at):
            events.job_event(job_id, job.tenant, JobEvent.PAUSED,
                             {"reason": PauseReason.GRAPH_UNAVAILABLE.value, "message": state.message})
            log.info("job %s paused: %s", job_id, state.message)
            paused += 1
    return paused
