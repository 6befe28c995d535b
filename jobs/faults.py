"""Faults of the whole tenant, told apart from a user's own failures (pure: the breaker is asked through a callable).

A fault pauses the job instead of failing its users one by one, and costs the users nothing (their
attempt is not counted): Graph unreachable (the tenant's circuit breaker is open), the credentials
refused (`GraphAuthError`), or the app denied a step (403) when nothing shows the denial is the
user's own. A step's 403s are the app's when no call of that step got past Graph's authorization
in the round, and either two users or more were denied in it or no call of that step was ever
allowed in this job; otherwise they are the users' own (an administrative unit with restricted
management, a protected account) and those users fail as forbidden. A seat shortage Graph reports
at an assignment pauses the job too (another tool took the seats), but the attempt counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from graphclient.breaker import BreakerState
from graphclient.errors import GraphAuthError, GraphError, GraphPermanentError, GraphTransientError, GraphUnavailable
from jobs.models import PauseReason, Reason
from jobs.reasons import reason_for
from jobs.steps import STEP_ACTIONS, Step

# The tenant's breaker state, asked only after a failure that may mean Graph is unreachable.
BreakerQuestion = Callable[[], BreakerState]


@dataclass(frozen=True)
class Fault:
    """A failure of the whole tenant (or its seats): the job pauses for `reason`."""

    reason: PauseReason
    message: str


@dataclass(frozen=True)
class Judgement:
    """What a round's answers showed of the app's permissions, before each user's answer is applied."""

    allowed: frozenset[Step] = frozenset()  # steps at least one call of which got past authorization
    denied: dict[Step, str] = field(default_factory=dict)  # steps whose 403s are the app's, with the pause message


def no_answer(error: GraphError) -> bool:
    """Whether Graph gave no usable answer (transport failure, timeout, 5xx): what the breaker counts."""
    return isinstance(error, GraphTransientError) and (error.status is None or error.status >= 500)


def tenant_fault(error: GraphError, breaker_state: BreakerQuestion) -> Fault | None:
    """The pause a failure calls for when it is the whole tenant's, not one user's (403s aside)."""
    if isinstance(error, GraphUnavailable):
        return Fault(PauseReason.GRAPH_UNAVAILABLE, error.message)
    if isinstance(error, GraphAuthError):
        return Fault(PauseReason.AUTH_FAILED, error.message)
    if no_answer(error):
        state = breaker_state()  # asked only after a transport failure or a 5xx
        if state.open:
            return Fault(PauseReason.GRAPH_UNAVAILABLE, state.message)
    return None


def catalog_fault(error: GraphError, breaker_state: BreakerQuestion) -> Fault | None:
    """The pause a failed read of the tenant's SKUs calls for (that read is the app's own: a 403 is too)."""
    fault = tenant_fault(error, breaker_state)
    if fault is None and error.status == 403:
        fault = Fault(PauseReason.FORBIDDEN, error.message)
    return fault


def judge_round(answers: Iterable[tuple[Step, GraphError | None]], ever_allowed: Callable[[Step], bool]) -> Judgement:
    """The steps a round's answers show allowed, and those whose 403s are the app's (see the module's rule).

    `ever_allowed(step)` says whether a call of `step` got past authorization earlier in this job.
    """
    denied: dict[Step, list[GraphError]] = {}
    allowed: set[Step] = set()
    for step, error in answers:
        if error is None or (isinstance(error, GraphPermanentError) and not isinstance(error, GraphAuthError)
                             and error.status != 403):
            allowed.add(step)  # authorized, even if Graph then refused the change itself
        elif error.status == 403:
            denied.setdefault(step, []).append(error)
    return Judgement(frozenset(allowed), {
        step: f"the app may not {STEP_ACTIONS[step]} ({len(errors)} user(s) refused): {errors[0].message}"
        for step, errors in denied.items()
        if step not in allowed and (len(errors) >= 2 or not ever_allowed(step))
    })


def user_fault(step: Step, error: GraphError, judgement: Judgement, breaker_state: BreakerQuestion) -> Fault | None:
    """The pause one user's failed step calls for when it is not the user's doing, else None."""
    if step is Step.ASSIGN and reason_for(error) is Reason.NO_FREE_SEAT:
        return Fault(PauseReason.NO_FREE_SEAT, error.message or "no free seat")
    if error.status == 403 and step in judgement.denied:
        return Fault(PauseReason.FORBIDDEN, judgement.denied[step])
    return tenant_fault(error, breaker_state)


def charged(fault: Fault) -> bool:
    """Whether the attempt that met the fault counts as the user's (a seat shortage is met by the user's write)."""
    return fault.reason is PauseReason.NO_FREE_SEAT


def round_pause(current: Fault | None, found: Fault) -> Fault:
    """The pause a round ends in: a seat shortage wins (it resumes when seats appear), else the first fault."""
    if found.reason is PauseReason.NO_FREE_SEAT or current is None:
        return found
    return current
