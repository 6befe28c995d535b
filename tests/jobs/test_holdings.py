"""Per-SKU holdings from a Graph user body: direct, through groups, group assignments in error."""

from __future__ import annotations

from typing import Any

from jobs.holdings import AssignmentError, AssignmentState, Holdings

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"
BI = "f8a1db68-be16-40ed-86d5-cb42ce701560"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
YAMMER = "7547a3fe-08ee-4ccb-b430-5077c5041653"
G1 = "11111111-aaaa-4aaa-8aaa-000000000001"
G2 = "11111111-aaaa-4aaa-8aaa-000000000002"


def state(sku: str, group: str | None = None, plans: tuple[str, ...] = (), st: str = "Active",
          error: str = "None") -> dict[str, Any]:
    return {"skuId": sku, "assignedByGroup": group, "disabledPlans": list(plans), "state": st, "error": error,
            "lastUpdatedDateTime": "2026-11-30T10:00:00Z"}


def body(*states: dict[str, Any], assigned: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    if assigned is None:
        held: dict[str, list[str]] = {}
        for s in states:
            if s["state"] in ("Active", "ActiveWithError"):
                held.setdefault(s["skuId"], list(s["disabledPlans"]))
        assigned = [{"skuId": sku, "disabledPlans": plans} for sku, plans in held.items()]
    return {"id": "u-1", "assignedLicenses": assigned, "licenseAssignmentStates": list(states)}


def test_a_direct_license_is_held_directly_with_its_disabled_plans() -> None:
    holdings = Holdings.from_graph(body(state(E3.upper(), plans=(SWAY.upper(),))))
    e3 = holdings.get(E3)
    assert e3 is not None
    assert e3.direct == (SWAY,)
    assert e3.held_directly and e3.held and not e3.via_group and not e3.inherited_only
    assert holdings.held_skus() == {E3} and holdings.direct_skus() == {E3}
    assert holdings.groups_covering(E3) == ()


def test_a_license_from_a_group_only_is_inherited_and_names_the_group() -> None:
    holdings = Holdings.from_graph(body(state(E3, G1.upper())))
    assert holdings.inherited_only(E3.upper())
    assert holdings.held_via_group(E3)
    assert holdings.groups_covering(E3) == (G1,)
    assert holdings.direct_skus() == frozenset()
    assert holdings.held_skus() == {E3}


def test_two_groups_and_a_direct_assignment_of_one_sku_are_one_held_sku() -> None:
    holdings = Holdings.from_graph(body(state(E3), state(E3, G1), state(E3, G2)))
    e3 = holdings.get(E3)
    assert e3 is not None
    assert e3.held_directly and not e3.inherited_only
    assert e3.group_ids == (G1, G2)
    assert len(holdings.held()) == 1


def test_group_assignments_in_error_hold_nothing_and_are_listed_with_their_reason() -> None:
    holdings = Holdings.from_graph(body(
        state(E5, G1, st="Error", error="CountViolation"),
        state(BI, G2, st="Error", error="MutuallyExclusiveViolation"),
        state(E3, G2, st="Error", error="DependencyViolation"),
    ))
    assert holdings.held_skus() == frozenset()
    assert not holdings.inherited_only(E5)
    assert holdings.groups_covering(E5) == ()
    failures = {sku: f for sku, f in holdings.failures()}
    assert failures[E5].group_id == G1 and failures[E5].error is AssignmentError.COUNT and not failures[E5].holds
    assert failures[BI].error is AssignmentError.EXCLUSIVE
    assert failures[E3].error is AssignmentError.DEPENDENCY
    assert holdings.group_ids() == (G1, G2)  # by SKU, then Graph's order


def test_active_with_error_still_holds_the_license_and_is_listed_as_a_failure() -> None:
    holdings = Holdings.from_graph(body(state(E3, G1, st="ActiveWithError", error="CountViolation")))
    e3 = holdings.get(E3)
    assert e3 is not None
    assert e3.inherited_only and holdings.held_skus() == {E3}
    assert [f.state for f in e3.failures] == [AssignmentState.ACTIVE_WITH_ERROR]
    assert e3.failures[0].holds


def test_a_direct_assignment_a_group_gives_with_the_same_plans_is_redundant() -> None:
    holdings = Holdings.from_graph(body(state(E3, plans=(SWAY, YAMMER)), state(E3, G1, plans=(YAMMER.upper(), SWAY))))
    assert holdings.redundant_direct(E3)
    assert [h.sku_id for h in holdings.redundant_direct_skus()] == [E3]


def test_a_direct_assignment_with_other_plans_than_the_group_is_not_redundant() -> None:
    holdings = Holdings.from_graph(body(state(E3), state(E3, G1, plans=(SWAY,))))
    assert not holdings.redundant_direct(E3)
    e3 = holdings.get(E3)
    assert e3 is not None
    assert e3.covering_groups([SWAY]) == (G1,)
    assert e3.effective_disabled() == ()  # the direct assignment turns SWAY on


def test_a_group_assignment_in_error_does_not_make_a_direct_one_redundant() -> None:
    holdings = Holdings.from_graph(body(state(E3), state(E3, G1, st="ActiveWithError", error="CountViolation"),
                                        state(E3, G2, st="Error", error="CountViolation")))
    assert not holdings.redundant_direct(E3)
    assert not holdings.redundant_direct(E5)  # not held at all


def test_without_license_assignment_states_every_assigned_license_is_direct() -> None:
    holdings = Holdings.from_graph({"assignedLicenses": [{"skuId": E3, "disabledPlans": [SWAY]}]})
    assert not holdings.states_known
    e3 = holdings.get(E3)
    assert e3 is not None and e3.direct == (SWAY,) and not e3.via_group


def test_an_assigned_license_no_state_explains_counts_as_direct() -> None:
    holdings = Holdings.from_graph(body(state(E3, G1), assigned=[{"skuId": E3, "disabledPlans": []},
                                                                 {"skuId": BI, "disabledPlans": []}]))
    assert holdings.states_known
    assert holdings.inherited_only(E3)
    assert holdings.direct_skus() == {BI}


def test_unknown_and_missing_state_and_error_values_parse_safely() -> None:
    assert AssignmentError.parse("Others") is AssignmentError.OTHER
    assert AssignmentError.parse(None) is AssignmentError.NONE
    assert AssignmentError.parse("countviolation") is AssignmentError.COUNT
    assert AssignmentState.parse(None) is AssignmentState.ACTIVE
    assert AssignmentState.parse("Something") is AssignmentState.ERROR
    assert not AssignmentState.DISABLED.holds


def test_effective_disabled_plans_are_those_every_holding_assignment_disables() -> None:
    holdings = Holdings.from_graph(body(state(E3, G1, plans=(SWAY, YAMMER)), state(E3, G2, plans=(SWAY,)),
                                        state(E3, G1.replace("1", "3"), plans=(), st="Error", error="Other")))
    e3 = holdings.get(E3)
    assert e3 is not None
    assert e3.effective_disabled() == (SWAY,)


def test_an_empty_body_holds_nothing() -> None:
    holdings = Holdings.from_graph({})
    assert holdings.skus == () and holdings.held_skus() == frozenset() and holdings.get(E3) is None


def test_to_graph_round_trips_direct_group_and_failed_assignments() -> None:
    holdings = Holdings.from_graph(body(state(E3, plans=(SWAY,)), state(E3, G1),
                                        state(BI, G2, st="ActiveWithError", error="CountViolation"),
                                        state(E5, G2, st="Error", error="CountViolation")))
    again = Holdings.from_graph({"licenseAssignmentStates": holdings.to_graph()})
    assert again == holdings


def test_with_direct_keeps_the_groups_and_replaces_the_direct_assignments() -> None:
    holdings = Holdings.from_graph(body(state(E3), state(E3, G1, plans=(SWAY,)), state(BI)))
    after = holdings.with_direct({E5.upper(): [YAMMER]})
    assert after.direct() == {E5: (YAMMER,)}
    assert after.inherited_only(E3) and after.groups_covering(E3) == (G1,)
    assert after.get(BI) is None
    assert after.effective() == {E3: (SWAY,), E5: (YAMMER,)}
    assert holdings.effective() == {E3: (), BI: ()}
