"""Plans for users who hold licenses through groups: inherited removals, adds a group covers, seats, rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.counters import PlanCounters, plan_keys
from jobs.models import (
    Assignment,
    GroupLink,
    License,
    LicenseMode,
    Operation,
    PlanNote,
    Reason,
    UserResult,
    UserStatus,
)
from jobs.plan import PlanOutcome, UserState, plan_user
from jobs.rollback import undo
from jobs.skus import SkuCatalog

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # ENTERPRISEPACK
E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"  # SPE_E5
BI = "f8a1db68-be16-40ed-86d5-cb42ce701560"  # POWER_BI_PRO
G1 = "0a0a0a0a-1111-4111-8111-000000000001"
G2 = "0a0a0a0a-1111-4111-8111-000000000002"


@pytest.fixture(scope="module")
def catalog() -> SkuCatalog:
    items = json.loads((CORPUS / "subscribed_skus.json").read_text(encoding="utf-8"))["value"]
    return SkuCatalog.from_graph(items)


@pytest.fixture(scope="module")
def sway(catalog: SkuCatalog) -> str:
    sku = catalog.get(E3)
    assert sku is not None
    return next(p.plan_id for p in sku.plans if p.name == "SWAY")


def graph_user(direct: dict[str, list[str]] | None = None, groups: list[tuple[str, str, list[str]]] | None = None,
               errors: list[tuple[str, str, str]] | None = None) -> UserState:
    """A Graph user body as Graph returns it: `assignedLicenses` the union, `licenseAssignmentStates` each one."""
    direct, groups, errors = direct or {}, groups or [], errors or []
    states: list[dict[str, Any]] = [
        {"skuId": sku, "assignedByGroup": None, "disabledPlans": plans, "state": "Active", "error": "None"}
        for sku, plans in direct.items()]
    states += [{"skuId": sku, "assignedByGroup": gid, "disabledPlans": plans, "state": "Active", "error": "None"}
               for sku, gid, plans in groups]
    states += [{"skuId": sku, "assignedByGroup": gid, "disabledPlans": [], "state": "Error", "error": error}
               for sku, gid, error in errors]
    effective: dict[str, set[str]] = {}
    for sku, plans in [*direct.items(), *((sku, plans) for sku, _, plans in groups)]:
        effective[sku] = effective[sku] & set(plans) if sku in effective else set(plans)
    return UserState.from_graph({
        "id": "u-ada", "userPrincipalName": "ada@contoso.example", "usageLocation": "US",
        "assignedLicenses": [{"skuId": sku, "disabledPlans": sorted(plans)} for sku, plans in effective.items()],
        "licenseAssignmentStates": states,
    })


def op(add: tuple[License, ...] = (), remove: tuple[str, ...] = (), *, assignment: Assignment = Assignment.ANY,
       mode: LicenseMode = LicenseMode.ADD) -> Operation:
    return Operation(row=2, user="ada@contoso.example", add=add, remove=remove, assignment=assignment, mode=mode)


def test_removing_a_license_held_only_through_a_group_is_a_predicted_failure_naming_the_group(
        catalog: SkuCatalog) -> None:
    plan = plan_user(op(remove=(E3.upper(),)), graph_user(groups=[(E3, G1, []), (E3, G2, [])]), catalog)
    assert (plan.outcome, plan.reason) == (PlanOutcome.FAIL, Reason.INHERITED_FROM_GROUP)
    assert plan.message is not None and G1 in plan.message and G2 in plan.message and "ENTERPRISEPACK" in plan.message
    assert plan.groups == (GroupLink(E3, G1), GroupLink(E3, G2))
    assert plan_keys(plan) == ["fail:inherited_from_group"]


def test_one_inherited_removal_fails_the_whole_call(catalog: SkuCatalog) -> None:
    plan = plan_user(op(remove=(E3, BI)), graph_user(direct={BI: []}, groups=[(E3, G1, [])]), catalog)
    assert plan.reason is Reason.INHERITED_FROM_GROUP and G1 in (plan.message or "")


def test_removing_a_direct_license_a_group_also_gives_is_a_write_that_frees_no_seat(catalog: SkuCatalog) -> None:
    plan = plan_user(op(remove=(E3,)), graph_user(direct={E3: []}, groups=[(E3, G1, [])]), catalog)
    assert plan.outcome is PlanOutcome.CHANGE and plan.assign and plan.remove == (E3,)
    assert plan.seats_released == ()
    assert plan.after is not None and plan.after.held() == {E3: ()} and plan.after.direct() == {}
    assert plan.action(catalog) == "remove the direct ENTERPRISEPACK (still held through a group)"
    assert PlanCounters.from_hash(dict.fromkeys(plan_keys(plan), 1)).released == {}


def test_removing_a_direct_license_without_groups_still_frees_its_seat(catalog: SkuCatalog) -> None:
    plan = plan_user(op(remove=(E3,)), graph_user(direct={E3: []}, groups=[(BI, G1, [])]), catalog)
    assert plan.seats_released == (E3,)


def test_an_add_a_group_already_gives_is_unchanged_and_noted(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(License(E3),)), graph_user(groups=[(E3, G1, [])]), catalog)
    assert plan.outcome is PlanOutcome.UNCHANGED
    assert plan.note is PlanNote.HELD_VIA_GROUP and plan.groups == (GroupLink(E3, G1),)
    assert plan_keys(plan) == ["unchanged", "note:held_via_group"]


def test_with_assignment_direct_an_add_a_group_gives_is_assigned_directly_without_a_seat(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(License(E3),), assignment=Assignment.DIRECT), graph_user(groups=[(E3, G1, [])]), catalog)
    assert plan.outcome is PlanOutcome.CHANGE and plan.assign and plan.add == (License(E3),)
    assert plan.seats_needed == () and plan.note is None
    assert plan.after is not None and plan.after.direct() == {E3: ()}
    assert plan.action(catalog) == "assign ENTERPRISEPACK directly (also held through a group)"


def test_an_add_turning_on_a_plan_the_group_disables_is_a_real_add_without_a_seat(catalog: SkuCatalog,
                                                                                  sway: str) -> None:
    plan = plan_user(op(add=(License(E3),)), graph_user(groups=[(E3, G1, [sway])]), catalog)
    assert plan.outcome is PlanOutcome.CHANGE and plan.add == (License(E3),)
    assert plan.seats_needed == ()
    assert plan.after is not None and plan.after.held() == {E3: ()}


def test_an_add_whose_group_assignment_is_in_error_needs_a_seat(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(License(E5),)), graph_user(errors=[(E5, G1, "CountViolation")]), catalog)
    assert plan.outcome is PlanOutcome.CHANGE and plan.seats_needed == (E5,)
    assert plan.groups == ()


def test_covered_adds_are_left_out_of_the_call_and_the_rest_is_added(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(License(E3), License(BI))), graph_user(groups=[(E3, G1, [])]), catalog)
    assert plan.outcome is PlanOutcome.CHANGE
    assert plan.add == (License(BI),) and plan.seats_needed == (BI,)
    assert plan.note is PlanNote.HELD_VIA_GROUP


def test_exact_mode_removes_only_direct_licenses_and_names_the_group_that_keeps_one(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(License(BI),), mode=LicenseMode.EXACT),
                     graph_user(direct={E5: []}, groups=[(E3, G1, [])]), catalog)
    assert plan.outcome is PlanOutcome.CHANGE and plan.remove == (E5,)
    assert plan.after is not None and set(plan.after.held()) == {E3, BI}
    assert GroupLink(E3, G1) in plan.groups


def test_states_without_groups_plan_as_before(catalog: SkuCatalog) -> None:
    plan = plan_user(op(remove=(E3,)), graph_user(direct={E3: []}), catalog)
    assert plan.outcome is PlanOutcome.CHANGE and plan.seats_released == (E3,)


def test_a_result_keeps_its_note_and_groups() -> None:
    result = UserResult(row=2, user="ada", status=UserStatus.UNCHANGED, note=PlanNote.HELD_VIA_GROUP,
                        groups=(GroupLink(E3, G1, "Sales E3"),))
    assert UserResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_the_rollback_puts_back_a_direct_assignment_and_never_touches_a_groups(catalog: SkuCatalog) -> None:
    before = graph_user(direct={E3: [], BI: []}, groups=[(E3, G1, []), (E5, G2, [])])
    plan = plan_user(op(remove=(E3, BI)), before, catalog)
    assert plan.after is not None and plan.seats_released == (BI,)
    job = Operation(row=2, user="ada@contoso.example", remove=(E3, BI))
    result = UserResult(row=2, user="ada@contoso.example", status=UserStatus.SUCCEEDED,
                        before=before.to_json(), after=plan.after.to_json())
    back = undo(job, result, catalog)
    assert back is not None and back.assignment is Assignment.DIRECT
    assert {a.sku_id for a in back.add} == {E3, BI} and back.remove == ()
    # Planned on the state the job left, the direct E3 is a real write (not covered by the group).
    again = plan_user(back, plan.after, catalog)
    assert again.outcome is PlanOutcome.CHANGE and again.seats_needed == (BI,)
    assert again.after is not None and again.after.same_as(before)


def test_the_rollback_of_a_direct_add_over_a_group_removes_only_the_direct_one(catalog: SkuCatalog) -> None:
    before = graph_user(groups=[(E3, G1, [])])
    plan = plan_user(op(add=(License(E3),), assignment=Assignment.DIRECT), before, catalog)
    assert plan.after is not None
    result = UserResult(row=2, user="ada@contoso.example", status=UserStatus.SUCCEEDED,
                        before=before.to_json(), after=plan.after.to_json())
    back = undo(Operation(row=2, user="ada@contoso.example", add=(License(E3),)), result, catalog)
    assert back is not None and back.remove == (E3,) and back.add == ()
    again = plan_user(back, plan.after, catalog)
    assert again.outcome is PlanOutcome.CHANGE and again.seats_released == ()


def test_exact_mode_notes_a_listed_license_only_a_group_gives(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(License(E3),), mode=LicenseMode.EXACT), graph_user(groups=[(E3, G1, [])]), catalog)
    assert plan.outcome is PlanOutcome.UNCHANGED and plan.note is PlanNote.HELD_VIA_GROUP
    direct = plan_user(op(add=(License(E3),), mode=LicenseMode.EXACT, assignment=Assignment.DIRECT),
                       graph_user(groups=[(E3, G1, [])]), catalog)
    assert direct.outcome is PlanOutcome.CHANGE and direct.add == (License(E3),) and direct.note is None
