"""A job's rollback: the operation built from each changed user's before/after, the drift guard, the seat order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.models import ExpectedState, License, Operation, Reason, UserResult, UserStatus
from jobs.plan import PlanOutcome, UserState, plan_user
from jobs.rollback import LOCATION_KEPT, SeatDemand, SeatOrder, rollback_operations, seat_order, undo
from jobs.skus import SkuCatalog

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # ENTERPRISEPACK
E1 = "18181a46-0d4e-45cd-891e-60aabd171b4e"  # STANDARDPACK
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
BI = "f8a1db68-be16-40ed-86d5-cb42ce701560"  # POWER_BI_PRO


@pytest.fixture(scope="module")
def catalog() -> SkuCatalog:
    items = json.loads((CORPUS / "subscribed_skus.json").read_text(encoding="utf-8"))["value"]
    return SkuCatalog.from_graph(items)


def plan_id(catalog: SkuCatalog, sku_id: str, name: str) -> str:
    sku = catalog.get(sku_id)
    assert sku is not None
    return next(p.plan_id for p in sku.plans if p.name == name)


def state(*licenses: tuple[str, list[str]], location: str | None = "US", user_id: str = "id-ada") -> dict[str, Any]:
    return UserState.from_graph({
        "id": user_id, "userPrincipalName": "ada@contoso.example", "usageLocation": location,
        "assignedLicenses": [{"skuId": sku, "disabledPlans": plans} for sku, plans in licenses],
    }).to_json()


def changed(before: dict[str, Any], after: dict[str, Any], row: int = 2, user: str = "ada@contoso.example",
            status: UserStatus = UserStatus.SUCCEEDED) -> tuple[Operation, UserResult]:
    """The original job's row and its result."""
    original = Operation(row=row, user=user, extra=(("employeeId", f"E{row}"),))
    return original, UserResult(row=row, user=user, status=status, before=before, after=after)


def back(catalog: SkuCatalog, before: dict[str, Any], after: dict[str, Any]) -> Operation:
    op = undo(*changed(before, after), catalog)
    assert op is not None
    return op


def test_licenses_the_job_added_are_removed(catalog: SkuCatalog) -> None:
    sway = plan_id(catalog, E3, "SWAY")
    op = back(catalog, state(), state((E3, [sway]), (EMS, [])))
    assert (op.add, op.remove, op.usage_location, op.location_last, op.note) == ((), (E3, EMS), None, False, None)
    assert op.expect == ExpectedState((License(E3, (sway,)), License(EMS)), "US", "id-ada")
    assert (op.row, op.user, op.extra) == (2, "ada@contoso.example", (("employeeId", "E2"),))  # as in the job
    assert dict(op.source) == {"remove": "ENTERPRISEPACK;EMS"}


def test_licenses_the_job_removed_come_back_with_their_disabled_plans(catalog: SkuCatalog) -> None:
    sway, teams = plan_id(catalog, E1, "SWAY"), plan_id(catalog, E1, "TEAMS1")
    op = back(catalog, state((E1, [teams, sway]), (EMS, [])), state((EMS, [])))
    assert op.add == (License(E1, tuple(sorted((sway, teams)))),) and op.remove == ()
    assert dict(op.source) == {"add": "STANDARDPACK", "disabled_plans": ";".join(
        "SWAY" if p == sway else "TEAMS1" for p in sorted((sway, teams)))}


def test_a_swap_is_swapped_back_in_one_operation(catalog: SkuCatalog) -> None:
    op = back(catalog, state((E1, [])), state((E3, [])))
    assert (op.add, op.remove) == ((License(E1, ()),), (E3,))
    assert seat_order(op) is SeatOrder.SWAP


def test_changed_disabled_plans_are_restored_without_a_seat(catalog: SkuCatalog) -> None:
    sway = plan_id(catalog, E3, "SWAY")
    op = back(catalog, state((E3, [sway])), state((E3, [])))
    assert (op.add, op.remove) == ((License(E3, (sway,)),), ())
    assert seat_order(op) is SeatOrder.NO_SEAT


def test_the_usage_location_goes_back_after_the_licenses(catalog: SkuCatalog) -> None:
    op = back(catalog, state(location="GB"), state((BI, []), location="NL"))
    assert (op.remove, op.usage_location, op.location_last, op.note) == ((BI,), "GB", True, None)
    assert dict(op.source) == {"remove": "POWER_BI_PRO", "usage_location": "GB"}


def test_a_usage_location_the_user_lacked_is_kept_and_said(catalog: SkuCatalog) -> None:
    op = back(catalog, state(location=None), state((BI, []), location="FR"))
    assert (op.remove, op.usage_location, op.location_last) == ((BI,), None, False)
    assert op.note == LOCATION_KEPT.format(location="FR")
    assert "Graph cannot clear a usage location" in (op.note or "")
    # Only the location was set: nothing to send, but the user is in the rollback, to say so.
    only = back(catalog, state(location=None), state(location="FR"))
    assert (only.add, only.remove, only.usage_location, only.note) == ((), (), None, op.note)


@pytest.mark.parametrize("status", [UserStatus.UNCHANGED, UserStatus.FAILED, UserStatus.CANCELLED,
                                    UserStatus.WOULD_CHANGE])
def test_users_the_job_did_not_change_get_no_operation(catalog: SkuCatalog, status: UserStatus) -> None:
    original = Operation(row=2, user="ada@contoso.example")
    result = UserResult(row=2, user=original.user, status=status, before=state())
    assert undo(original, result, catalog) is None


def test_a_success_without_its_after_state_or_a_pending_user_get_no_operation(catalog: SkuCatalog) -> None:
    original = Operation(row=2, user="ada@contoso.example")
    no_after = UserResult(row=2, user=original.user, status=UserStatus.SUCCEEDED, before=state())
    assert undo(original, no_after, catalog) is None
    assert undo(original, None, catalog) is None


def test_the_operation_survives_storage(catalog: SkuCatalog) -> None:
    sway = plan_id(catalog, E3, "SWAY")
    for op in (back(catalog, state((E3, [sway]), location="GB"), state(location="NL")),
               back(catalog, state(location=None), state((BI, []), location="FR"))):
        assert Operation.from_json(json.loads(op.dumps())) == op


# --- the drift guard, at plan time -----------------------------------------------------------------

def current(*licenses: tuple[str, list[str]], location: str | None = "US", user_id: str = "id-ada") -> UserState:
    return UserState.from_json(state(*licenses, location=location, user_id=user_id))


def test_a_user_as_the_job_left_it_is_planned_back_to_before(catalog: SkuCatalog) -> None:
    sway = plan_id(catalog, E1, "SWAY")
    before, after = state((E1, [sway]), location="GB"), state((E3, []), location="NL")
    plan = plan_user(back(catalog, before, after), UserState.from_json(after), catalog)
    assert plan.outcome is PlanOutcome.CHANGE and plan.assign and plan.set_location
    assert plan.after is not None and plan.after.same_as(UserState.from_json(before))
    assert plan.seats_needed == (E1,) and plan.seats_released == (E3,)


def test_drift_is_refused_naming_every_difference(catalog: SkuCatalog) -> None:
    op = back(catalog, state(location="US"), state((BI, []), location="GB"))
    plan = plan_user(op, current((BI, []), (EMS, []), location="DE"), catalog)
    assert (plan.outcome, plan.reason) == (PlanOutcome.FAIL, Reason.DRIFTED)
    assert plan.message == ("changed since the job: usage location is DE, the job left GB; "
                            "holds EMS, which the job did not leave")


def test_drift_in_disabled_plans_and_a_license_gone(catalog: SkuCatalog) -> None:
    sway = plan_id(catalog, E3, "SWAY")
    op = back(catalog, state(), state((E3, [sway]), (BI, [])))
    plan = plan_user(op, current((E3, [])), catalog)
    assert plan.reason is Reason.DRIFTED
    assert plan.message == ("changed since the job: ENTERPRISEPACK has every plan on, the job left SWAY off; "
                            "does not hold POWER_BI_PRO, which the job left")
    cleared = plan_user(op, current((E3, [sway]), (BI, []), location=None), catalog)
    assert cleared.message == "changed since the job: usage location is not set, the job left US"


def test_another_account_under_the_same_name_is_drift(catalog: SkuCatalog) -> None:
    op = back(catalog, state(), state((BI, [])))
    plan = plan_user(op, current((BI, []), user_id="id-other"), catalog)
    assert plan.reason is Reason.DRIFTED
    assert plan.message is not None and "another account (id-other)" in plan.message
    # Even when it happens to be in the state the rollback would give: it is not the user the job changed.
    assert plan_user(op, current(user_id="id-other"), catalog).reason is Reason.DRIFTED


def test_a_user_already_back_is_unchanged(catalog: SkuCatalog) -> None:
    op = back(catalog, state((E1, [])), state((E3, [])))
    plan = plan_user(op, current((E1, [])), catalog)
    assert plan.outcome is PlanOutcome.UNCHANGED and plan.reason is None


def test_an_operation_without_expectation_plans_as_before(catalog: SkuCatalog) -> None:
    plain = Operation(row=2, user="ada@contoso.example", add=(License(EMS),))
    assert plan_user(plain, current((BI, []), location="DE"), catalog).outcome is PlanOutcome.CHANGE


# --- the order of a rollback's operations, and its seats -----------------------------------------------

def test_removals_go_first_then_swaps_then_re_adds(catalog: SkuCatalog) -> None:
    rows = [
        changed(state((E1, [])), state(), row=2, user="readd@x"),  # the job removed: re-add
        changed(state(), state((E3, [])), row=3, user="remove@x"),  # the job added: remove
        changed(state((E1, [])), state((E3, [])), row=4, user="swap@x"),
        changed(state(location="GB"), state(location="NL"), row=5, user="location@x"),
        changed(state(), state(), row=6, user="unchanged@x", status=UserStatus.UNCHANGED),
        changed(state((EMS, [])), state(), row=7, user="readd2@x"),
        changed(state(), state((E1, [])), row=8, user="remove2@x"),
    ]
    passes: list[int] = []

    def results() -> list[tuple[Operation, UserResult | None]]:
        passes.append(1)
        return list(rows)

    ops = list(rollback_operations(results, catalog))
    assert [op.user for op in ops] == ["remove@x", "location@x", "remove2@x", "swap@x", "readd@x", "readd2@x"]
    assert [seat_order(op) for op in ops] == [SeatOrder.NO_SEAT] * 3 + [SeatOrder.SWAP] + [SeatOrder.READD] * 2
    assert len(passes) == len(SeatOrder)  # the rows are read again per group, never held whole


@pytest.mark.parametrize(("before", "after", "reads"), [
    ((), (E3,), 1),  # the job only added: every way back is a removal, found in the first pass
    ((E1,), (), 2),  # the job only removed: one more pass for the re-adds
    ((E1,), (E3,), 2),  # swaps
])
def test_a_group_of_operations_needing_seats_is_read_only_when_there_is_one(
        catalog: SkuCatalog, before: tuple[str, ...], after: tuple[str, ...], reads: int) -> None:
    rows = [changed(state(*((s, []) for s in before)), state(*((s, []) for s in after)), row=i + 2, user=f"u{i}@x")
            for i in range(5)]
    passes: list[int] = []

    def results() -> list[tuple[Operation, UserResult | None]]:
        passes.append(1)
        return list(rows)

    assert [op.user for op in rollback_operations(results, catalog)] == [f"u{i}@x" for i in range(5)]
    assert len(passes) == reads


def test_seat_demand_is_net_of_what_the_rollback_frees(catalog: SkuCatalog) -> None:
    rows = [
        changed(state((E1, [])), state(), row=2, user="a@x"),  # re-adds STANDARDPACK
        changed(state(), state((E1, [])), row=3, user="b@x"),  # frees one
        changed(state((E1, [])), state(), row=4, user="c@x"),  # re-adds another
        changed(state((EMS, [])), state((E3, [])), row=5, user="d@x"),  # swap: EMS back, E3 freed
        changed(state((E3, [plan_id(catalog, E3, "SWAY")])), state((E3, [])), row=6, user="e@x"),  # plans only
    ]
    demand = SeatDemand()
    assert len(list(demand.count(rollback_operations(lambda: rows, catalog)))) == 5
    assert demand.net() == {E1: 1, EMS: 1}
