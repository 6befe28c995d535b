"""The per-user plan: unchanged, change (with seats and warnings) or a failure known without writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.models import LicenseAdd, LicenseMode, Operation
from jobs.plan import Outcome, UserState, plan_user, predicted_after
from jobs.skus import SkuCatalog

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # ENTERPRISEPACK
E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"  # SPE_E5
E1 = "18181a46-0d4e-45cd-891e-60aabd171b4e"  # STANDARDPACK
BI = "f8a1db68-be16-40ed-86d5-cb42ce701560"  # POWER_BI_PRO


@pytest.fixture(scope="module")
def catalog() -> SkuCatalog:
    items = json.loads((CORPUS / "subscribed_skus.json").read_text(encoding="utf-8"))["value"]
    return SkuCatalog.from_graph(items)


def sway(catalog: SkuCatalog) -> str:
    sku = catalog.get(E3)
    assert sku is not None
    return next(p.plan_id for p in sku.plans if p.name == "SWAY")


def user(*licenses: tuple[str, list[str]], location: str | None = "US") -> UserState:
    return UserState.from_graph({
        "id": "u-1", "userPrincipalName": "ada@contoso.example", "usageLocation": location,
        "assignedLicenses": [{"skuId": sku.upper(), "disabledPlans": plans} for sku, plans in licenses],
    })


def op(add: tuple[LicenseAdd, ...] = (), remove: tuple[str, ...] = (), location: str | None = None) -> Operation:
    return Operation(row=2, user="ada@contoso.example", add=add, remove=remove, usage_location=location)


def test_not_found_is_a_predicted_failure(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(LicenseAdd(E3),)), None, catalog)
    assert (plan.outcome, plan.reason, plan.before) == (Outcome.FAIL, "user_not_found", None)


def test_requested_state_already_holds(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(LicenseAdd(E3, (sway(catalog),)),)), user((E3, [sway(catalog)])), catalog)
    assert plan.outcome is Outcome.UNCHANGED
    assert plan.seats_needed == () and plan.action(catalog) == "none"


def test_held_sku_with_other_disabled_plans_is_a_change_without_a_seat(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(LicenseAdd(E3),)), user((E3, [sway(catalog)])), catalog)
    assert plan.outcome is Outcome.CHANGE and plan.assign
    assert plan.seats_needed == ()
    assert plan.action(catalog) == "change disabled plans of ENTERPRISEPACK"


def test_swap_takes_one_seat_and_gives_one_back(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(LicenseAdd(E5),), remove=(E3,)), user((E3, [])), catalog)
    assert plan.outcome is Outcome.CHANGE
    assert (plan.seats_needed, plan.seats_released) == ((E5,), (E3,))
    assert plan.after is not None and plan.after.held() == {E5: ()}
    assert plan.action(catalog) == "add SPE_E5; remove ENTERPRISEPACK"


def test_removing_an_unheld_license_fails_without_a_write(catalog: SkuCatalog) -> None:
    plan = plan_user(op(remove=(E5,)), user((E3, [])), catalog)
    assert (plan.outcome, plan.reason) == (Outcome.FAIL, "license_not_assigned")
    assert plan.message is not None and "SPE_E5" in plan.message


def test_no_usage_location_anywhere_fails_without_a_write(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(LicenseAdd(E3),)), user(location=None), catalog)
    assert (plan.outcome, plan.reason) == (Outcome.FAIL, "usage_location_missing")


def test_location_from_the_row_is_set_first(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(LicenseAdd(E3, (sway(catalog),)),), location="GB"), user(location=None), catalog)
    assert plan.outcome is Outcome.CHANGE and plan.set_location and plan.assign
    assert plan.action(catalog) == "set usage location GB; add ENTERPRISEPACK (SWAY off)"


def test_location_only_row_already_set_is_unchanged(catalog: SkuCatalog) -> None:
    plan = plan_user(op(location="US"), user((E3, [])), catalog)
    assert plan.outcome is Outcome.UNCHANGED


def test_location_only_change_writes_no_license(catalog: SkuCatalog) -> None:
    plan = plan_user(op(location="DE"), user((E3, [])), catalog)
    assert plan.outcome is Outcome.CHANGE and plan.set_location and not plan.assign


def test_tiers_of_one_service_in_added_and_kept_licenses_warn(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(LicenseAdd(E3),)), user((E1, [])), catalog)
    assert plan.outcome is Outcome.CHANGE
    assert len(plan.warnings) == 1
    assert "ENTERPRISEPACK" in plan.warnings[0] and "STANDARDPACK" in plan.warnings[0]


def test_no_warning_when_the_clashing_license_is_removed_or_unrelated(catalog: SkuCatalog) -> None:
    assert plan_user(op(add=(LicenseAdd(E3),), remove=(E1,)), user((E1, [])), catalog).warnings == ()
    assert plan_user(op(add=(LicenseAdd(BI),)), user((E1, [])), catalog).warnings == ()


def test_predicted_after_round_trips_through_json(catalog: SkuCatalog) -> None:
    before = user((E3, [sway(catalog)]), (E1, []))
    after = predicted_after(op(add=(LicenseAdd(E5),), remove=(E1,), location="NL"), before)
    again = UserState.from_json(json.loads(json.dumps(after.to_json())))
    assert again.same_as(after) and again.held() == {E3: (sway(catalog),), E5: ()}
    assert again.usage_location == "NL"


def test_a_swap_already_done_is_unchanged_but_a_lone_removal_of_an_unheld_license_fails(catalog: SkuCatalog) -> None:
    done = plan_user(op(add=(LicenseAdd(E5),), remove=(E3,)), user((E5, [])), catalog)
    assert done.outcome is Outcome.UNCHANGED
    half = plan_user(op(add=(LicenseAdd(E5),), remove=(E3,)), user(), catalog)
    assert (half.outcome, half.reason) == (Outcome.FAIL, "license_not_assigned")


# --- mode=exact: the operation lists every license the user should hold -------------------------------------

def exact(*add: LicenseAdd, location: str | None = None) -> Operation:
    return Operation(row=2, user="ada@contoso.example", add=add, usage_location=location, mode=LicenseMode.EXACT)


def test_exact_removes_what_is_held_beyond_the_list_and_adds_what_is_missing(catalog: SkuCatalog) -> None:
    plan = plan_user(exact(LicenseAdd(E3), LicenseAdd(BI)), user((E3, []), (E1, []), (E5, [])), catalog)
    assert plan.outcome is Outcome.CHANGE and plan.assign
    assert (plan.add, plan.remove) == ((LicenseAdd(BI),), (E5, E1))
    assert (plan.seats_needed, plan.seats_released) == ((BI,), (E5, E1))
    assert plan.action(catalog) == "add POWER_BI_PRO; remove SPE_E5; remove STANDARDPACK"


def test_exact_keeps_the_disabled_plans_of_a_listed_license_unless_the_row_sets_them(catalog: SkuCatalog) -> None:
    held = user((E3, [sway(catalog)]))
    assert plan_user(exact(LicenseAdd(E3)), held, catalog).outcome is Outcome.UNCHANGED
    teams = next(p.plan_id for p in catalog.get(E3).plans if p.name == "TEAMS1")  # type: ignore[union-attr]
    plan = plan_user(exact(LicenseAdd(E3, (teams,))), held, catalog)
    assert plan.outcome is Outcome.CHANGE and plan.add == (LicenseAdd(E3, (teams,)),) and plan.remove == ()


def test_exact_with_an_empty_list_removes_every_license(catalog: SkuCatalog) -> None:
    plan = plan_user(exact(), user((E3, []), (BI, [])), catalog)
    assert (plan.outcome, plan.add, plan.remove) == (Outcome.CHANGE, (), (E3, BI))
    assert plan.after is not None and plan.after.licenses == ()
    assert plan_user(exact(), user(location=None), catalog).outcome is Outcome.UNCHANGED


def test_exact_needs_a_usage_location_only_for_what_it_adds(catalog: SkuCatalog) -> None:
    assert plan_user(exact(LicenseAdd(E3)), user((E3, []), location=None), catalog).outcome is Outcome.UNCHANGED
    plan = plan_user(exact(LicenseAdd(BI)), user((E3, []), location=None), catalog)
    assert (plan.outcome, plan.reason) == (Outcome.FAIL, "usage_location_missing")


def test_add_mode_assigns_the_operations_own_lists(catalog: SkuCatalog) -> None:
    plan = plan_user(op(add=(LicenseAdd(BI),), remove=(E3,)), user((E3, []), (E1, [])), catalog)
    assert (plan.add, plan.remove) == ((LicenseAdd(BI),), (E3,))
