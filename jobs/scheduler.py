"""Fair dispatch of chunks to the broker, and recovery of chunks whose worker died (the reaper).

Policy: the broker never holds a whole job. A new job enqueues a window of `chunk_window` chunks;
each chunk that finishes enqueues the job's next one. So every active job has at most a window of
chunks queued or running, whatever its size: a 10-user job submitted behind a 20,000-user
migration waits for at most one chunk of it per worker slot, and jobs of different tenants
interleave in the queue instead of one waiting behind the other.
"""

from __future__ import annotations

import logging
from typing import Protocol

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
        for orphan in store.orphaned_chunks(job_id, requeue_after_s=requeue_after_s):
            if store.reclaim(job_id, orphan.n, orphan.seen):
                log.warning("requeueing chunk %s of job %s (was %s)", orphan.n, job_id, orphan.state.phase.value)
                send(job_id, orphan.n, 0.0)
                requeued += 1
    return requeued
