"""The steps of one user, as a pure state machine: from the user's work, its plan and Graph's answer, what next.

Per user the steps are:

    READ    GET the user (`$select` of licenses and usage location). The first read makes the
            plan (jobs.plan): unchanged (no write), a predicted failure (no write) or a change.
            A later read (after an ambiguous failure or a crash) compares with the planned
            `after` state, so a write is never blindly repeated.
    PATCH   set usageLocation (only when the plan changes it).
    ASSIGN  one assignLicense call with both addLicenses and removeLicenses (a swap is one call).

A rollback's operation (`location_last`) sends ASSIGN before PATCH: the licenses that needed the
location the job set are gone before the old one is put back. A dry run stops after the plan.

No I/O here: the round driver (jobs.executor) sends each step, hands the answer to these
functions, and acts on what they return: the next `Step`, a `Retry`, or an `Ending` it writes as
the user's result. Faults of the whole tenant are judged apart (jobs.faults).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from graphclient.client import BatchRequest
from graphclient.errors import GraphError, GraphPermanentError
from graphclient.retry import RetryPolicy, is_retryable
from jobs.models import Operation, Reason, UserResult, UserStatus, iso_time
from jobs.plan import PlanOutcome, UserPlan, UserState, plan_user
from jobs.reasons import reason_for
from jobs.schedule import late_by_s
from jobs.skus import SkuCatalog

# What a read asks of a user: the license-relevant state and the ids (jobs.plan.UserState);
# `licenseAssignmentStates` tells direct assignments from those inherited from groups (jobs.holdings).
USER_SELECT = ("id", "userPrincipalName", "usageLocation", "assignedLicenses", "licenseAssignmentStates")

# Results that carry the operation's note: the user was (or would be) taken as far as it goes.
_NOTED = frozenset({UserStatus.SUCCEEDED, UserStatus.UNCHANGED, UserStatus.WOULD_CHANGE})


class Step(Enum):
    """What a user needs next."""

    READ = "read"
    PATCH = "patch"
    ASSIGN = "assign"


# What each step lets the app do, in a pause message's words.
STEP_ACTIONS = {Step.READ: "read users", Step.PATCH: "set usageLocation", Step.ASSIGN: "assign licenses"}


@dataclass(frozen=True)
class Waited:
    """A user's "does not exist (yet)" answers while the directory replicates it."""

    first_at: float
    last_at: float
    count: int


@dataclass
class UserWork:
    """One user's progress within a chunk's run (mutable; the round driver owns it, these functions read it)."""

    op: Operation
    step: Step = Step.READ
    plan: UserPlan | None = None
    failures: int = 0  # failed attempts that count toward the retry policy
    not_before: float = 0.0  # not sent again before this time (a backoff, a replication wait)
    waited: Waited | None = None
    # From a dry run that read the tenant page by page: whether the user was listed, and its state.
    known: tuple[bool, dict[str, Any] | None] = (False, None)

    @property
    def row(self) -> int:
        """The user's row: its identity within the job."""
        return self.op.row


@dataclass(frozen=True)
class Answer:
    """What Graph answered one step: its body on success, else the error."""

    body: dict[str, Any] | None = None
    error: GraphError | None = None


@dataclass(frozen=True)
class Retry:
    """Send the user's `step` again, not before `not_before` (the failure counts toward the retry policy)."""

    step: Step
    not_before: float


@dataclass(frozen=True)
class Ending:
    """How the user ends; the driver writes it as the user's result (`result`)."""

    status: UserStatus
    reason: Reason | None = None
    message: str | None = None
    detail: str | None = None
    error: GraphError | None = None
    reached: bool = False  # the plan's `after` state is the user's now (results then carry it)


def request(item_id: str, work: UserWork) -> BatchRequest:
    """The user's next step as a request (a `$batch` item, or sent alone)."""
    op = work.op
    if work.step is Step.READ:
        return BatchRequest.get_user(item_id, op.user, USER_SELECT)
    if work.step is Step.PATCH:
        return BatchRequest.update_user(item_id, op.user, {"usageLocation": op.usage_location})
    # The plan's lists: the operation's own, or (mode=exact) what the user's state calls for.
    adds, removes = (work.plan.add, work.plan.remove) if work.plan is not None else (op.add, op.remove)
    return BatchRequest.assign_license(item_id, op.user, [a.to_json() for a in adds], list(removes))


def known_answer(work: UserWork) -> Answer | None:
    """A first read the tenant's page-by-page listing answers (the user's state, or not found); None: send it."""
    listed, state = work.known
    if work.step is not Step.READ or work.plan is not None or not listed:
        return None
    if state is not None:
        return Answer(state)
    message = f"'{work.op.user}' was not among the tenant's users when they were listed"
    return Answer(error=GraphPermanentError(message, status=404, code="Request_ResourceNotFound"))


def not_found(error: GraphError) -> bool:
    """Whether Graph said the user does not exist."""
    return error.status == 404 or error.code == "Request_ResourceNotFound"


def makes_plan(work: UserWork, answer: Answer) -> bool:
    """Whether this answer is the user's first read (its state, or not found): the one that makes the plan."""
    return work.step is Step.READ and work.plan is None and (answer.error is None or not_found(answer.error))


def plan_from(work: UserWork, answer: Answer, catalog: SkuCatalog) -> UserPlan:
    """The user's plan from its first read."""
    state = UserState.from_graph(answer.body or {}) if answer.error is None else None
    return plan_user(work.op, state, catalog)


def after_plan(work: UserWork, *, dry_run: bool, read_error: GraphError | None = None) -> Step | Ending:
    """The plan is made: end the user (dry run, unchanged, predicted failure) or go on to its first write.

    `read_error` is Graph's answer when the read itself said the user does not exist.
    """
    plan = _plan(work)
    if dry_run:
        return _planned(plan)
    if plan.outcome is PlanOutcome.UNCHANGED:
        return Ending(UserStatus.UNCHANGED, detail="already in the requested state")
    if plan.outcome is PlanOutcome.FAIL:
        return Ending(UserStatus.FAILED, reason=plan.reason, message=plan.message, error=read_error,
                      detail="known from the user's state; nothing was sent")
    return Step.PATCH if plan.set_location and not (plan.assign and work.op.location_last) else Step.ASSIGN


def _planned(plan: UserPlan) -> Ending:
    """A dry run's ending: what would happen, and why."""
    if plan.outcome is PlanOutcome.UNCHANGED:
        return Ending(UserStatus.UNCHANGED, detail="already in the requested state")
    if plan.outcome is PlanOutcome.FAIL:
        note = "new accounts may take a while to appear" if plan.reason == Reason.USER_NOT_FOUND else None
        return Ending(UserStatus.WOULD_FAIL, reason=plan.reason, message=plan.message, detail=note)
    return Ending(UserStatus.WOULD_CHANGE)


def after_success(work: UserWork, body: dict[str, Any], *, dry_run: bool) -> Step | Ending:
    """A step succeeded (other than the first read): the user's next step, or how it ends."""
    plan = _plan(work)
    if dry_run or plan.outcome is not PlanOutcome.CHANGE or plan.after is None:
        return after_plan(work, dry_run=dry_run)  # planned before a restart; ends without a write
    op = work.op
    if work.step is Step.READ:  # a check after an ambiguous write or a crash
        state = UserState.from_graph(body)
        if state.same_as(plan.after):
            return Ending(UserStatus.SUCCEEDED, detail="already in the requested state", reached=True)
        location_left = plan.set_location and state.usage_location != plan.after.usage_location
        licenses_left = not replace(state, usage_location=plan.after.usage_location).same_as(plan.after)
        if licenses_left and (op.location_last or not location_left):
            return Step.ASSIGN
        if location_left:
            return Step.PATCH
        return Ending(UserStatus.SUCCEEDED, reached=True)
    if work.step is Step.PATCH and plan.assign and not op.location_last:
        return Step.ASSIGN
    if work.step is Step.ASSIGN and plan.set_location and op.location_last:
        return Step.PATCH
    return Ending(UserStatus.SUCCEEDED, reached=True)


def after_failure(work: UserWork, error: GraphError, *, policy: RetryPolicy, rng: random.Random, now: float,
                  elapsed_s: float) -> Retry | Ending:
    """A step failed for the user's own reasons (faults of the tenant are judged before): retry or end.

    A failure that may have been applied (ambiguous) is retried as a read first. `elapsed_s` is the
    chunk's retry budget used so far.
    """
    if isinstance(error, GraphPermanentError):
        return Ending(UserStatus.FAILED, reason=reason_for(error), error=error)
    failures = work.failures + 1
    # The wait itself is not charged to the budget here: a retry planned inside it still goes
    # out (perhaps after a hand-back), and the budget is checked again if it fails.
    if not (is_retryable(error) and policy.may_retry(failures, elapsed_s)):
        return Ending(UserStatus.FAILED, reason=Reason.RETRIES_EXHAUSTED, error=error)
    step = Step.READ if error.ambiguous and work.step is not Step.READ else work.step
    return Retry(step, now + policy.backoff_s(failures, error, rng))


def waits_for_replication(work: UserWork, error: GraphError) -> bool:
    """Whether the failure may be the directory's lag: the user is not known yet, or still lacks the
    location this job set (Graph's directory is eventually consistent)."""
    if not_found(error):
        return True
    plan = work.plan
    return (work.step is Step.ASSIGN and plan is not None and plan.set_location
            and reason_for(error) in (Reason.USAGE_LOCATION_MISSING, Reason.INVALID_USAGE_LOCATION))


def replication_retry_at(waited: Waited, grace_s: float) -> float | None:
    """When to ask again for a user waiting for replication; None once its grace is over.

    Scheduled like a backoff (2, 4, 8, 16, 30, 30 ... s, the last one at the end of the grace).
    """
    now = waited.last_at
    if now - waited.first_at >= grace_s:
        return None
    return now + min(2.0 ** min(waited.count, 5), 30.0, waited.first_at + grace_s - now)


def with_wait(ending: Ending, waited: Waited) -> Ending:
    """A user given up after the grace: say how long it was waited for."""
    note = (f"given up after {waited.last_at - waited.first_at:.0f} s of waiting for the directory to catch up "
            f"({waited.count} answers, the first at {iso_time(waited.first_at)}, "
            f"the last at {iso_time(waited.last_at)})")
    return dataclasses.replace(ending, detail=note)


def seats_taken(work: UserWork, ending: Ending, *, dry_run: bool) -> tuple[str, ...]:
    """The seats the user's plan reserved that it took (now in consumedUnits) or never will: given back."""
    plan = work.plan
    if dry_run or plan is None or plan.outcome is not PlanOutcome.CHANGE:
        return ()
    return plan.seats_needed if ending.status in (UserStatus.SUCCEEDED, UserStatus.FAILED) else ()


def result(work: UserWork, ending: Ending, *, attempts: int, now: float, catalog: SkuCatalog) -> UserResult:
    """The user's terminal result, with the plan's before (and, once reached, after) state."""
    plan, op, error = work.plan, work.op, ending.error
    detail = ending.detail
    if op.note and ending.status in _NOTED:  # what the operation cannot do (a rollback's), told with its outcome
        detail = f"{detail}; {op.note}" if detail else op.note
    late_s = late_by_s(op, now)
    if late_s is not None and op.due_at is not None:
        late = (f"ran {late_s:.0f} s late: it was due at {iso_time(op.due_at)} and no worker ran it then "
                "(the row's day passed while workers were down)")
        detail = f"{detail}; {late}" if detail else late
    return UserResult(
        row=op.row, user=op.user, status=ending.status, reason=ending.reason,
        graph_code=error.code if error else None,
        graph_message=error.message if error else ending.message,
        http_status=error.status if error else None,
        attempts=attempts, updated_at=now, detail=detail,
        before=plan.before.to_json() if plan is not None and plan.before is not None else None,
        after=plan.after.to_json() if ending.reached and plan is not None and plan.after is not None else None,
        action=plan.action(catalog) if plan is not None and plan.outcome is PlanOutcome.CHANGE else None,
        warnings=plan.warnings if plan is not None else (),
        note=plan.note if plan is not None and ending.status in _NOTED else None,
        groups=plan.groups if plan is not None else (),
        scheduled_for=op.due_at, late_s=late_s,
    )


def cancelled(op: Operation, attempts: int, now: float) -> UserResult:
    """The result of a user a cancel stopped."""
    return UserResult(row=op.row, user=op.user, status=UserStatus.CANCELLED, reason=Reason.CANCELLED,
                      attempts=attempts, updated_at=now, scheduled_for=op.due_at)


def _plan(work: UserWork) -> UserPlan:
    assert work.plan is not None, "the user has no plan yet"
    return work.plan
