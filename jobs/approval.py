"""Approvals: a job that plans, stops at `planned` and waits for a second API key's decision.

A tenant profile with `require_approval` (and `approval_min_rows`) makes a job that would write plan
first (jobs.submit: reads, predictions, seats reserved as for any job) and wait. The decision is
taken once, atomically (`JobStore.decide`): approving starts its run (the run of a plan, which reads
every user again) with the seats the job held; rejecting it, or cancelling it while it waits, ends it
`cancelled` and releases its seats. The key that submitted a job may not decide on it. Each decision is
told to the listeners given (the API's notifications): `approved`, `rejected`, and a withdrawn job `finished`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from enum import StrEnum

from jobs.events import NO_LISTENERS, JobEvent, Listeners
from jobs.models import JobStatus
from jobs.progress import awaiting_approval, job_status
from jobs.record import Approval, ApprovalDecision, JobRecord
from jobs.seats import SeatLedger
from jobs.store import JobStore
from jobs.submit import Submitted, Submitter

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 500


class Refusal(StrEnum):
    """Why a key was refused a decision (the `why` of an `approval_refused` audit event)."""

    SELF_APPROVAL = "self_approval"  # the key that submitted the job
    READ_ONLY = "read_only"  # a key without write scope
    TENANT = "tenant"  # a key that may not use the job's tenant


class DecisionRefused(Exception):
    """This key may not decide on this job (403)."""

    def __init__(self, why: Refusal, message: str) -> None:
        super().__init__(message)
        self.why = why


class NotAwaiting(Exception):
    """The job does not wait for a decision (409): the message says what it is instead."""


def not_awaiting(record: JobRecord) -> str | None:
    """Why the job does not wait for approval now; None when it does."""
    if awaiting_approval(record):
        return None
    job_id, decided = record.id, record.approval
    if not record.spec.needs_approval:
        return f"job {job_id} does not wait for approval"
    if decided is not None:
        then = f"{decided.decision.value} by {decided.by}"
        return f"job {job_id} was already {then}" + (f"; its run is job {record.run_as}" if record.run_as else "")
    status = job_status(record)
    if status is JobStatus.CANCELLED:
        return f"job {job_id} was cancelled"
    return f"job {job_id} is {status.value}: it can be decided on once every user is planned"


class Approvals:
    """Approves and rejects jobs that wait for approval."""

    def __init__(self, store: JobStore, submitter: Submitter, seats: SeatLedger, *,
                 clock: Callable[[], float] = time.time, events: Listeners = NO_LISTENERS) -> None:
        self.store = store
        self.submitter = submitter
        self.seats = seats
        self.clock = clock
        self.events = events  # told of each decision (its notification), once it is taken

    def approve(self, job_id: str, by: str) -> Submitted:
        """Approve the job and start its run (which takes the job's seats); the run as accepted.

        DecisionRefused for the submitter's own key; NotAwaiting when the job does not wait (or lost
        a race to another decision); the run's own refusals (quota, ...) leave the job waiting.
        """
        record = self._waiting(job_id, by)
        approval = Approval(ApprovalDecision.APPROVED, by, self.clock())
        self._claim(record, approval)
        try:
            submitted = self.submitter.run_planned(job_id, owner=record.spec.owner, seat_policy=record.spec.seat_policy,
                                                   approval=approval)
        except BaseException:
            self.store.undecide(job_id, approval)
            raise
        log.info("job %s approved by %s: its run is job %s", job_id, by, submitted.id)
        self.events.job_event(job_id, record.tenant, JobEvent.APPROVED, {"by": by, "run_job": submitted.id})
        return submitted

    def reject(self, job_id: str, by: str, reason: str | None = None) -> Approval:
        """Reject the job: it ends cancelled with the reason, and its seats are released."""
        record = self._waiting(job_id, by)
        decided = self._end(record, Approval(ApprovalDecision.REJECTED, by, self.clock(), reason or None))
        self.events.job_event(job_id, record.tenant, JobEvent.REJECTED, {"by": by, "reason": decided.reason})
        return decided

    def withdraw(self, job_id: str, by: str) -> Approval:
        """Cancel a job while it waits (any writing key, its submitter's included): it ends cancelled."""
        record = self.store.job(job_id)
        if record is None:
            raise NotAwaiting(f"job {job_id} does not exist")
        why = not_awaiting(record)
        if why is not None:
            raise NotAwaiting(why)
        decided = self._end(record, Approval(ApprovalDecision.WITHDRAWN, by, self.clock(), "cancelled while it waited"))
        self.events.job_event(job_id, record.tenant, JobEvent.FINISHED, {"status": JobStatus.CANCELLED.value})
        return decided

    def _waiting(self, job_id: str, by: str) -> JobRecord:
        """The job's record if it waits for approval and `by` may decide on it."""
        record = self.store.job(job_id)
        if record is None:
            raise NotAwaiting(f"job {job_id} does not exist")
        if record.spec.needs_approval and by == record.spec.owner:
            raise DecisionRefused(Refusal.SELF_APPROVAL,
                                  f"API key '{by}' submitted job {job_id}: another API key must approve or reject it"
                                  " (the submitter may cancel it)")
        why = not_awaiting(record)
        if why is not None:
            raise NotAwaiting(why)
        return record

    def _claim(self, record: JobRecord, approval: Approval) -> None:
        """Take the one decision on the job; NotAwaiting if another request took it first."""
        taken = self.store.decide(record.id, approval)
        if taken is not None:
            raise NotAwaiting(f"job {record.id} was already {taken.decision.value} by {taken.by}")

    def _end(self, record: JobRecord, approval: Approval) -> Approval:
        """Decide the job ends without a run, and release its seats."""
        self._claim(record, approval)
        self.seats.release_all(record.tenant, record.id)
        log.info("job %s %s by %s", record.id, approval.decision.value, approval.by)
        return approval
