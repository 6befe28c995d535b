"""Group-based licensing in the background: changes queue a group's members, processed after a delay."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from graphsim.groups import Group, ProcessingState
from graphsim.lifecycle import iso
from graphsim.tenant import Tenant, User


@dataclass
class _Job:
    """A group's pending processing: the users to bring in line, and when (graphsim's clock)."""

    queued_at: float
    start_at: float
    done_at: float
    users: dict[str, None] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcessingRun:
    """One finished processing of a group: when, and for how many users it worked or failed (as the
    "Finish applying group based license to users" audit event summarises it)."""

    queued: str | None
    finished: str | None
    succeeded: int
    failed: int

    def json(self) -> dict[str, Any]:
        """The control surface's view."""
        return {"queuedDateTime": self.queued, "finishedDateTime": self.finished,
                "usersSucceeded": self.succeeded, "usersFailed": self.failed}


class GroupLicensing:
    """Applies group license and membership changes to the members asynchronously.

    A change queues the affected users of the group; for the first half of the delay the group is
    QueuedForProcessing, then ProcessingInProgress, and once the delay has passed the users are processed
    (on the next request: graphsim does its work when asked, on its own clock) and the group is
    ProcessingComplete. Changes while a group is pending join the pending run.
    """

    def __init__(self, tenant: Tenant, delay_s: Callable[[], float], clock: Callable[[], float]) -> None:
        self.tenant = tenant
        self._delay_s = delay_s
        self._clock = clock
        self._jobs: dict[str, _Job] = {}
        # The groups of pending jobs, deleted ones included (their members still lose the licenses).
        self._groups: dict[str, Group] = {}
        self._next_due = math.inf
        self.last_runs: dict[str, ProcessingRun] = {}

    def _wall(self, at: float) -> float:
        """The wall-clock time of a moment of graphsim's clock."""
        return time.time() - (self._clock() - at)

    def enqueue(self, group: Group, users: Iterable[str]) -> None:
        """Queue `users` of `group` for processing (after the delay, or with the group's pending run)."""
        job = self._jobs.get(group.id)
        if job is None:
            now, delay = self._clock(), self._delay_s()
            job = self._jobs[group.id] = _Job(now, now + delay / 2, now + delay)
            self._groups[group.id] = group
            self._next_due = min(self._next_due, job.done_at)
        job.users.update(dict.fromkeys(users))

    def enqueue_all(self, group: Group) -> None:
        """Queue every user member of the group (former members still holding its licenses are queued
        already: they leave a group only through a change that queues them)."""
        self.enqueue(group, group.user_members())

    def reprocess_user(self, user: User) -> None:
        """Queue the user in every group that licenses it or should (POST users/{id}/reprocessLicenseAssignment)."""
        for gid in dict.fromkeys([*user.member_of, *user.inherited]):
            group = self.tenant.groups.get(gid) or self._groups.get(gid)
            if group is not None:
                self.enqueue(group, [user.id])

    def state(self, group: Group) -> ProcessingState:
        """The group's licenseProcessingState now (run_due has been called for this request)."""
        job = self._jobs.get(group.id)
        if job is None:
            return ProcessingState.COMPLETE
        # Without a delay a change is never seen in progress: it is queued until the next request runs it.
        queued = self._clock() < job.start_at or job.start_at == job.done_at
        return ProcessingState.QUEUED if queued else ProcessingState.IN_PROGRESS

    def pending(self, group: Group) -> bool:
        """Whether the group has changes not processed yet."""
        return group.id in self._jobs

    def run_due(self) -> None:
        """Process every group whose delay has passed; cheap when none has."""
        now = self._clock()
        if now < self._next_due:
            return
        for gid, job in sorted(self._jobs.items(), key=lambda item: item[1].done_at):
            if job.done_at <= now:
                del self._jobs[gid]
                self._run(self._groups.pop(gid), job.users, job.queued_at, job.done_at)
        self._next_due = min((job.done_at for job in self._jobs.values()), default=math.inf)

    def process_now(self, group: Group, users: Iterable[str]) -> None:
        """Process users of a group at once (the control surface's test set-up, no queue)."""
        now = self._clock()
        self._run(group, dict.fromkeys(users), now, now)

    def _run(self, group: Group, users: Iterable[str], queued_at: float, done_at: float) -> None:
        finished = self._wall(done_at)
        stamp = iso(finished) or ""
        succeeded = failed = 0
        for uid in users:
            user = self.tenant.users.get(uid)
            if user is None:
                continue
            self.tenant.apply_group(user, group, stamp)
            if uid in group.error_members:
                failed += 1
            elif group.id in user.inherited:
                succeeded += 1
        self.last_runs[group.id] = ProcessingRun(iso(self._wall(queued_at)), stamp, succeeded, failed)
