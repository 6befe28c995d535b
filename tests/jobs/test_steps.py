"""The per-user step machine on its own: no Redis, no Graph, only a user's work, its plan and an answer."""

from __future__ import annotations

import random

import pytest

from graphclient.errors import GraphPermanentError, GraphThrottled, GraphTransientError
from graphclient.retry import RetryPolicy
from jobs import steps
from jobs.models import Operation, Reason, UserStatus
from jobs.plan import UserState, plan_user
from jobs.skus import SkuCatalog
from jobs.steps import Answer, Ending, Retry, Step, UserWork, Waited
from tests.jobs.helpers import E3, EMS, op, user

CATALOG = SkuCatalog(())
POLICY = RetryPolicy(max_attempts=3, max_total_s=100, backoff_base_s=1, backoff_max_s=8, max_inline_wait_s=30)
NOW = 1_700_000_000.0


def planned(operation: Operation, state: dict[str, object] | None, step: Step = Step.READ) -> UserWork:
    """A user whose first read found `state` (None: not found) and was planned."""
    work = UserWork(op=operation, step=step)
    work.plan = plan_user(operation, UserState.from_graph(state) if state is not None else None, CATALOG)
    return work


def failure(work: UserWork, error: GraphPermanentError | GraphTransientError, elapsed_s: float = 0.0) -> object:
    return steps.after_failure(work, error, policy=POLICY, rng=random.Random(1), now=NOW, elapsed_s=elapsed_s)


def test_the_first_read_makes_the_plan_and_a_change_goes_to_its_first_write() -> None:
    work = UserWork(op=op(2, "a@x", add=(E3,), location="GB"))
    answer = Answer(user(location=None))
    assert steps.request("1", work).method == "GET" and steps.makes_plan(work, answer)
    work.plan = steps.plan_from(work, answer, CATALOG)
    assert steps.after_plan(work, dry_run=False) is Step.PATCH  # the location first
    work.step = Step.PATCH
    assert steps.request("1", work).body == {"usageLocation": "GB"}
    assert steps.after_success(work, {}, dry_run=False) is Step.ASSIGN
    work.step = Step.ASSIGN
    assert steps.request("1", work).body == {"addLicenses": [{"skuId": E3, "disabledPlans": []}],
                                             "removeLicenses": []}
    ending = steps.after_success(work, {}, dry_run=False)
    assert ending == Ending(UserStatus.SUCCEEDED, reached=True)
    assert isinstance(ending, Ending) and steps.seats_taken(work, ending, dry_run=False) == (E3.lower(),)


def test_a_rollback_assigns_before_it_puts_the_old_location_back() -> None:
    back = Operation(row=2, user="a@x", remove=(EMS,), usage_location="US", location_last=True)
    work = planned(back, user(EMS, location="GB"))
    assert steps.after_plan(work, dry_run=False) is Step.ASSIGN
    work.step = Step.ASSIGN
    assert steps.after_success(work, {}, dry_run=False) is Step.PATCH


@pytest.mark.parametrize(
    ("state", "dry_run", "expected"),
    [
        (user(E3), False, Ending(UserStatus.UNCHANGED, detail="already in the requested state")),
        (user(E3), True, Ending(UserStatus.UNCHANGED, detail="already in the requested state")),
        (user(), True, Ending(UserStatus.WOULD_CHANGE)),
        (None, True, Ending(UserStatus.WOULD_FAIL, reason=Reason.USER_NOT_FOUND,
                            message="user 'a@x' does not exist in the tenant",
                            detail="new accounts may take a while to appear")),
        (None, False, Ending(UserStatus.FAILED, reason=Reason.USER_NOT_FOUND,
                             message="user 'a@x' does not exist in the tenant",
                             detail="known from the user's state; nothing was sent")),
    ],
)
def test_a_plan_that_writes_nothing_ends_the_user(state: dict[str, object] | None, dry_run: bool,
                                                  expected: Ending) -> None:
    work = planned(op(2, "a@x", add=(E3,)), state)
    assert steps.after_plan(work, dry_run=dry_run) == expected
    assert steps.seats_taken(work, expected, dry_run=dry_run) == ()


def test_a_read_after_an_ambiguous_write_decides_what_is_left() -> None:
    work = planned(op(2, "a@x", add=(E3,), location="GB"), user(location=None), step=Step.READ)
    assert steps.after_success(work, user(E3, location="GB"), dry_run=False) == Ending(
        UserStatus.SUCCEEDED, detail="already in the requested state", reached=True)
    assert steps.after_success(work, user(location="GB"), dry_run=False) is Step.ASSIGN  # the location made it
    assert steps.after_success(work, user(location=None), dry_run=False) is Step.PATCH  # nothing made it


def test_a_failure_is_retried_with_backoff_read_back_when_ambiguous_and_ended_when_spent() -> None:
    work = planned(op(2, "a@x", add=(E3,)), user(), step=Step.ASSIGN)
    throttled = failure(work, GraphThrottled("429", status=429, retry_after_s=5.0))
    assert throttled == Retry(Step.ASSIGN, NOW + 5.0)  # Retry-After first
    lost = failure(work, GraphTransientError("read timed out", ambiguous=True))
    assert isinstance(lost, Retry) and lost.step is Step.READ and NOW <= lost.not_before <= NOW + 1.0
    work.failures = 2  # the policy allows 3 attempts
    spent = failure(work, GraphTransientError("503", status=503))
    assert isinstance(spent, Ending) and (spent.status, spent.reason) == (UserStatus.FAILED,
                                                                           Reason.RETRIES_EXHAUSTED)
    refused = failure(work, GraphPermanentError("conflicting licenses", status=400))
    assert isinstance(refused, Ending) and refused.reason is Reason.CONFLICTING_LICENSES and refused.error is not None


def test_a_listed_tenant_answers_first_reads_without_sending_them() -> None:
    listed = UserWork(op=op(2, "a@x"), known=(True, user(E3)))
    absent = UserWork(op=op(3, "b@x"), known=(True, None))
    assert steps.known_answer(listed) == Answer(user(E3))
    gone = steps.known_answer(absent)
    assert gone is not None and gone.error is not None and steps.not_found(gone.error)
    assert steps.known_answer(UserWork(op=op(4, "c@x"))) is None  # not listed: read it
    listed.step = Step.ASSIGN
    assert steps.known_answer(listed) is None  # only the first read


def test_replication_waits_back_off_until_the_grace_ends() -> None:
    missing = GraphPermanentError("does not exist", status=404, code="Request_ResourceNotFound")
    assert steps.waits_for_replication(UserWork(op=op(2, "a@x")), missing)
    assert steps.replication_retry_at(Waited(NOW, NOW, 1), grace_s=180) == NOW + 2.0
    assert steps.replication_retry_at(Waited(NOW, NOW + 100, 9), grace_s=180) == NOW + 130.0  # at most 30 s
    assert steps.replication_retry_at(Waited(NOW, NOW + 170, 12), grace_s=180) == NOW + 180.0  # the grace's end
    assert steps.replication_retry_at(Waited(NOW, NOW + 180, 13), grace_s=180) is None
    ended = steps.with_wait(Ending(UserStatus.FAILED), Waited(NOW, NOW + 180, 13))
    assert ended.detail is not None and ended.detail.startswith("given up after 180 s")


def test_the_result_carries_the_plan_and_the_operations_note() -> None:
    noted = Operation(row=2, user="a@x", remove=(EMS,), note="usage location GB kept")
    work = planned(noted, user(EMS))
    result = steps.result(work, Ending(UserStatus.SUCCEEDED, reached=True), attempts=3, now=NOW, catalog=CATALOG)
    assert (result.row, result.status, result.attempts, result.detail) == (2, UserStatus.SUCCEEDED, 3,
                                                                          "usage location GB kept")
    assert result.before is not None and result.after == {"assignedLicenses": [], "usageLocation": "US"}
    assert result.action == f"remove {EMS}"


GROUP = "0a0a0a0a-1111-4111-8111-000000000001"


def with_group(direct: tuple[str, ...], inherited: tuple[str, ...]) -> dict[str, object]:
    """A user body holding `direct` directly and `inherited` through GROUP (assignedLicenses the union)."""
    states = ([{"skuId": s, "assignedByGroup": None, "disabledPlans": [], "state": "Active", "error": "None"}
               for s in direct]
              + [{"skuId": s, "assignedByGroup": GROUP, "disabledPlans": [], "state": "Active", "error": "None"}
                 for s in inherited])
    return {**user(*dict.fromkeys(direct + inherited)), "licenseAssignmentStates": states}


def test_reads_select_how_each_license_is_assigned() -> None:
    assert "licenseAssignmentStates" in steps.USER_SELECT


def test_an_inherited_removal_ends_without_a_write_and_names_the_group() -> None:
    work = planned(op(2, "a@x", remove=(E3,)), with_group((), (E3,)))
    ending = steps.after_plan(work, dry_run=False)
    assert isinstance(ending, Ending) and ending.status is UserStatus.FAILED
    assert ending.reason is Reason.INHERITED_FROM_GROUP
    result = steps.result(work, ending, attempts=1, now=NOW, catalog=CATALOG)
    assert [(g.sku_id, g.group_id) for g in result.groups] == [(E3, GROUP)]


def test_a_read_back_tells_a_direct_removal_not_made_from_one_made_when_a_group_keeps_the_license() -> None:
    work = planned(op(2, "a@x", remove=(E3,)), with_group((E3,), (E3,)), step=Step.READ)
    assert steps.after_success(work, with_group((E3,), (E3,)), dry_run=False) is Step.ASSIGN
    assert steps.after_success(work, with_group((), (E3,)), dry_run=False) == Ending(
        UserStatus.SUCCEEDED, detail="already in the requested state", reached=True)
