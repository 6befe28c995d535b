"""A chunk's life, named: its live states, what a claim answers, what one run of it came to.

A chunk is dispatched (queued), claimed by one worker (running), then completed, handed back
(queued again, due later; a long wait kept in the due set, jobs.due), or parked while its job is
paused (resume requeues it). A run that ends with users lacking a result (a Redis failover lost
them) is not completed: the chunk is queued and sent again. The reaper
requeues a running chunk whose worker died and a queued one whose message may be lost. The store
keeps the live state per chunk in `bl:job:{id}:live` as a short string its Lua scripts compare
(`q:<due ts>`, `r:<worker id>:<claim ts>`, `p:<ts>`); Python reads and writes it only through
`LiveChunk`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """Where a dispatched, unfinished chunk is (the prefix of its live state)."""

    QUEUED = "q"  # on the broker (or due to be), waiting for a worker
    RUNNING = "r"  # claimed by a worker
    PARKED = "p"  # stopped while its job is paused; requeued by the resume


@dataclass(frozen=True)
class LiveChunk:
    """A chunk's live state: its phase, since when (a queued chunk: when it is due), and its worker when running."""

    phase: Phase
    at: float
    worker: str | None = None

    def encode(self) -> str:
        """The stored form (`q:<ts>`, `r:<worker>:<ts>`, `p:<ts>`)."""
        if self.phase is Phase.RUNNING:
            return f"{running_prefix(self.worker or '')}{self.at}"
        return f"{self.phase.value}:{self.at}"

    @classmethod
    def parse(cls, raw: str) -> LiveChunk:
        """Inverse of `encode`."""
        phase, _, rest = raw.partition(":")
        if phase == Phase.RUNNING:
            worker, _, at = rest.rpartition(":")
            return cls(Phase.RUNNING, float(at or 0), worker)
        return cls(Phase(phase), float(rest or 0))


def running_prefix(worker_id: str) -> str:
    """What the live state of every chunk `worker_id` runs starts with (its claims are compared on it)."""
    return f"{Phase.RUNNING.value}:{worker_id}:"


class ClaimResult(StrEnum):
    """What claiming a chunk answered (jobs/lua/claim_chunk.lua)."""

    OK = "ok"  # ours now
    DONE = "done"  # finished already (a redelivered message)
    BUSY = "busy"  # running on another live worker
    GONE = "gone"  # the job no longer exists


class ChunkOutcome(StrEnum):
    """What one run of a chunk task came to."""

    DONE = "done"  # every user ended; the chunk is complete
    HANDED_BACK = "handed_back"  # requeued to run later (every remaining user waits)
    PARKED = "parked"  # the job is paused
    RESUMED = "resumed"  # the job was resumed while the chunk stopped: sent again at once
    INCOMPLETE = "incomplete"  # users without a result after the run (Redis lost them): sent again at once
    SKIPPED_RUNNING = "skipped:running"  # already running in this worker (a redelivery)
    SKIPPED_DONE = "skipped:done"
    SKIPPED_BUSY = "skipped:busy"
    SKIPPED_GONE = "skipped:gone"

    @classmethod
    def skipped(cls, claim: ClaimResult) -> ChunkOutcome:
        """The outcome of a run whose claim was refused."""
        return cls(f"skipped:{claim.value}")
