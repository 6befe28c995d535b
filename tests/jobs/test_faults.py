"""The fault judge on its own: which failures are the whole tenant's (the job pauses) and which a user's."""

from __future__ import annotations

from graphclient.breaker import BreakerState
from graphclient.errors import (
    GraphAuthError,
    GraphError,
    GraphPermanentError,
    GraphTransientError,
    GraphUnavailable,
)
from jobs import faults
from jobs.faults import Fault, Judgement
from jobs.models import PauseReason
from jobs.steps import Step

DENIED = GraphPermanentError("Insufficient privileges", status=403, code="Authorization_RequestDenied")
OPEN = BreakerState(tenant="sim", open=True, next_probe_at=5.0, opened_at=0.0, failures_in_row=5, opens_total=1,
                    last_error="ConnectError")
CLOSED = BreakerState(tenant="sim", open=False, next_probe_at=None, opened_at=None, failures_in_row=0, opens_total=0,
                      last_error="")


class Breaker:
    """The breaker question, answering `state` and counting how often it was asked."""

    def __init__(self, state: BreakerState) -> None:
        self.state = state
        self.asked = 0

    def __call__(self) -> BreakerState:
        self.asked += 1
        return self.state


def never_allowed(_step: Step) -> bool:
    return False


def test_unreachable_graph_and_refused_credentials_are_the_tenants() -> None:
    breaker = Breaker(CLOSED)
    assert faults.tenant_fault(GraphUnavailable("breaker open"), breaker) == Fault(
        PauseReason.GRAPH_UNAVAILABLE, "breaker open")
    assert faults.tenant_fault(GraphAuthError("invalid_client", status=401), breaker) == Fault(
        PauseReason.AUTH_FAILED, "invalid_client")
    assert breaker.asked == 0  # the breaker is asked only after a transport failure or a 5xx
    assert faults.tenant_fault(GraphTransientError("503", status=503), breaker) is None  # Graph still answers
    assert faults.tenant_fault(GraphTransientError("503", status=503), Breaker(OPEN)) == Fault(
        PauseReason.GRAPH_UNAVAILABLE, OPEN.message)
    assert faults.tenant_fault(GraphTransientError("429ish", status=429), Breaker(OPEN)) is None
    assert faults.tenant_fault(DENIED, breaker) is None  # a 403 is judged with its round


def test_a_403_reading_the_catalog_is_the_apps() -> None:
    assert faults.catalog_fault(DENIED, Breaker(CLOSED)) == Fault(PauseReason.FORBIDDEN, DENIED.message)


def test_403s_are_the_apps_when_nothing_of_that_step_was_allowed_and_two_users_or_more_were_denied() -> None:
    round_answers: list[tuple[Step, GraphError | None]] = [(Step.ASSIGN, DENIED), (Step.ASSIGN, DENIED),
                                                           (Step.READ, None)]
    judgement = faults.judge_round(round_answers, lambda step: True)
    assert judgement.allowed == {Step.READ}
    assert judgement.denied == {Step.ASSIGN: f"the app may not assign licenses (2 user(s) refused): {DENIED.message}"}
    fault = faults.user_fault(Step.ASSIGN, DENIED, judgement, Breaker(CLOSED))
    assert fault is not None and fault.reason is PauseReason.FORBIDDEN


def test_a_single_403_is_the_users_once_the_step_was_ever_allowed() -> None:
    answers: list[tuple[Step, GraphError | None]] = [(Step.ASSIGN, DENIED)]
    assert faults.judge_round(answers, lambda step: True).denied == {}  # a protected account, say
    assert Step.ASSIGN in faults.judge_round(answers, never_allowed).denied  # the app never could


def test_a_403_beside_an_allowed_call_of_the_same_step_is_the_users() -> None:
    refused = GraphPermanentError("conflicting licenses", status=400)  # authorized, then refused on its merits
    judgement = faults.judge_round([(Step.ASSIGN, DENIED), (Step.ASSIGN, DENIED), (Step.ASSIGN, refused)],
                                   never_allowed)
    assert judgement == Judgement(frozenset({Step.ASSIGN}), {})
    assert faults.user_fault(Step.ASSIGN, DENIED, judgement, Breaker(CLOSED)) is None


def test_a_seat_shortage_at_an_assignment_pauses_and_wins_over_other_faults() -> None:
    no_seat = GraphPermanentError("Subscription does not have any available licenses.", status=400)
    seat = faults.user_fault(Step.ASSIGN, no_seat, Judgement(), Breaker(CLOSED))
    assert seat == Fault(PauseReason.NO_FREE_SEAT, no_seat.message) and faults.charged(seat)
    assert faults.user_fault(Step.PATCH, no_seat, Judgement(), Breaker(CLOSED)) is None
    auth = Fault(PauseReason.AUTH_FAILED, "refused")
    assert not faults.charged(auth)
    assert faults.round_pause(None, auth) is auth
    assert faults.round_pause(auth, seat) is seat
    assert faults.round_pause(seat, auth) is seat
    assert faults.round_pause(auth, Fault(PauseReason.GRAPH_UNAVAILABLE, "down")) is auth  # the first one


def test_no_answer_is_what_the_breaker_counts() -> None:
    assert faults.no_answer(GraphTransientError("connection reset", ambiguous=True))
    assert faults.no_answer(GraphTransientError("502", status=502))
    assert not faults.no_answer(GraphTransientError("malformed body", status=200))
    assert not faults.no_answer(GraphPermanentError("404", status=404))
