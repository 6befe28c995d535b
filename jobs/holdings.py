"""How a user holds each license: directly, through which groups, and which group assignments failed.

Pure: built from a Graph user body with `assignedLicenses` and `licenseAssignmentStates` selected.
`licenseAssignmentStates` has one entry per assignment (`assignedByGroup` null: direct, else the
group's id) with `state` (Active, ActiveWithError, Disabled, Error) and `error` (None,
CountViolation, ...). `assignedLicenses` is the union of what the user holds, one entry per SKU.
Seats: a user uses one seat per SKU held, however many assignments hold it; a failed group
assignment (state Error or Disabled) holds nothing and takes no seat.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class AssignmentState(StrEnum):
    """`licenseAssignmentState.state`."""

    ACTIVE = "Active"
    ACTIVE_WITH_ERROR = "ActiveWithError"
    DISABLED = "Disabled"
    ERROR = "Error"

    @classmethod
    def parse(cls, raw: object) -> AssignmentState:
        """A state as Graph writes it (any case); a missing one is Active (direct assignments may omit it)."""
        text = str(raw or "").strip().lower()
        if not text:
            return cls.ACTIVE
        return next((s for s in cls if s.value.lower() == text), cls.ERROR)

    @property
    def holds(self) -> bool:
        """Whether an assignment in this state gives the user the license (and takes a seat)."""
        return self in (AssignmentState.ACTIVE, AssignmentState.ACTIVE_WITH_ERROR)


class AssignmentError(StrEnum):
    """`licenseAssignmentState.error` ("Other" for any value not listed: Graph also wrote "Others")."""

    NONE = "None"
    COUNT = "CountViolation"
    EXCLUSIVE = "MutuallyExclusiveViolation"
    DEPENDENCY = "DependencyViolation"
    LOCATION = "ProhibitedInUsageLocationViolation"
    UNIQUENESS = "UniquenessViolation"
    OTHER = "Other"

    @classmethod
    def parse(cls, raw: object) -> AssignmentError:
        """An error as Graph writes it (any case); null or empty is NONE, an unknown value OTHER."""
        text = str(raw or "").strip().lower()
        if not text or text == "none":
            return cls.NONE
        return next((e for e in cls if e.value.lower() == text), cls.OTHER)


@dataclass(frozen=True)
class GroupGrant:
    """A SKU a group gives the user and the user holds (state Active or ActiveWithError)."""

    group_id: str
    disabled_plans: tuple[str, ...] = ()
    state: AssignmentState = AssignmentState.ACTIVE
    error: AssignmentError = AssignmentError.NONE


@dataclass(frozen=True)
class GroupFailure:
    """A group assignment in error: the group, the reason, and whether the user still holds the SKU through it.

    `holds` is False for state Error/Disabled (no license, no seat); True for ActiveWithError (a
    license held before stays held, and its seat with it).
    """

    group_id: str
    error: AssignmentError
    state: AssignmentState
    disabled_plans: tuple[str, ...] = ()

    @property
    def holds(self) -> bool:
        """Whether the user still holds the SKU through this assignment."""
        return self.state.holds


@dataclass(frozen=True)
class SkuHolding:
    """How one user holds one SKU; ids lower-case, plans sorted, groups in Graph's order."""

    sku_id: str
    # Disabled plans of the direct assignment; None when the user has no direct assignment.
    direct: tuple[str, ...] | None = None
    groups: tuple[GroupGrant, ...] = ()
    failures: tuple[GroupFailure, ...] = ()

    @property
    def held(self) -> bool:
        """Whether the user holds the SKU at all (and so uses one seat of it)."""
        return self.direct is not None or bool(self.groups)

    @property
    def held_directly(self) -> bool:
        """Whether there is a direct assignment (one assignLicense can remove)."""
        return self.direct is not None

    @property
    def via_group(self) -> bool:
        """Whether at least one group gives the user this SKU."""
        return bool(self.groups)

    @property
    def inherited_only(self) -> bool:
        """Held through groups and not directly: Graph refuses to remove it from the user (400)."""
        return self.direct is None and bool(self.groups)

    @property
    def group_ids(self) -> tuple[str, ...]:
        """The groups through which the user holds this SKU."""
        return tuple(dict.fromkeys(g.group_id for g in self.groups))

    @property
    def redundant_direct(self) -> bool:
        """A direct assignment a group already gives cleanly (state Active, no error) with the same disabled plans.

        Removing it changes nothing the user can use and releases no seat (Microsoft's cleanup step
        after moving users to group-based licensing). A group assignment in error does not count:
        the group may lose it.
        """
        return self.direct is not None and bool(self.covering_groups(self.direct))

    def covering_groups(self, disabled_plans: Iterable[str]) -> tuple[str, ...]:
        """Groups giving this SKU cleanly with exactly these disabled plans (any case, any order)."""
        wanted = _plans(disabled_plans)
        return tuple(dict.fromkeys(
            g.group_id for g in self.groups
            if g.state is AssignmentState.ACTIVE and g.error is AssignmentError.NONE and g.disabled_plans == wanted))

    def effective_disabled(self) -> tuple[str, ...]:
        """Plans off for the user: those every holding assignment disables (an enabled plan in one wins)."""
        sets = [set(self.direct)] if self.direct is not None else []
        sets.extend(set(g.disabled_plans) for g in self.groups)
        if not sets:
            return ()
        return tuple(sorted(set.intersection(*sets)))


@dataclass(frozen=True)
class Holdings:
    """Every SKU one user holds or failed to get through a group, by skuId (sorted)."""

    skus: tuple[SkuHolding, ...] = ()
    # False when the body had no `licenseAssignmentStates` (not selected): every license counts as direct.
    states_known: bool = True

    @classmethod
    def from_graph(cls, body: Mapping[str, Any]) -> Holdings:
        """From a Graph user body; without `licenseAssignmentStates`, `assignedLicenses` counts as direct."""
        raw_states = body.get("licenseAssignmentStates")
        direct: dict[str, tuple[str, ...]] = {}
        groups: dict[str, list[GroupGrant]] = {}
        failures: dict[str, list[GroupFailure]] = {}
        for item in raw_states or ():
            sku = str(item.get("skuId") or "").lower()
            if not sku:
                continue
            plans = _plans(item.get("disabledPlans") or ())
            state = AssignmentState.parse(item.get("state"))
            error = AssignmentError.parse(item.get("error"))
            group = item.get("assignedByGroup")
            if not group:
                if state.holds:
                    direct[sku] = plans
                continue
            gid = str(group).lower()
            if state.holds:
                groups.setdefault(sku, []).append(GroupGrant(gid, plans, state, error))
            if error is not AssignmentError.NONE or not state.holds:
                failures.setdefault(sku, []).append(GroupFailure(gid, error, state, plans))
        # assignedLicenses is the union Graph computed: a SKU it lists that no state explains is direct.
        explained = set(direct) | set(groups)
        for item in body.get("assignedLicenses") or ():
            sku = str(item.get("skuId") or "").lower()
            if sku and sku not in explained:
                direct[sku] = _plans(item.get("disabledPlans") or ())
        skus = sorted(set(direct) | set(groups) | set(failures))
        return cls(tuple(SkuHolding(sku, direct.get(sku), tuple(groups.get(sku, ())), tuple(failures.get(sku, ())))
                         for sku in skus), states_known=raw_states is not None)

    def get(self, sku_id: str) -> SkuHolding | None:
        """The holding of one SKU (any case), None when the user neither holds it nor failed to get it."""
        wanted = sku_id.lower()
        return next((h for h in self.skus if h.sku_id == wanted), None)

    def held(self) -> tuple[SkuHolding, ...]:
        """The SKUs the user holds, each using one seat."""
        return tuple(h for h in self.skus if h.held)

    def held_skus(self) -> frozenset[str]:
        """skuIds the user holds (directly or through groups): the seats the user uses."""
        return frozenset(h.sku_id for h in self.skus if h.held)

    def direct_skus(self) -> frozenset[str]:
        """skuIds with a direct assignment."""
        return frozenset(h.sku_id for h in self.skus if h.held_directly)

    def inherited_only(self, sku_id: str) -> bool:
        """Whether the user holds this SKU only through groups."""
        holding = self.get(sku_id)
        return holding is not None and holding.inherited_only

    def held_via_group(self, sku_id: str) -> bool:
        """Whether at least one group gives the user this SKU."""
        holding = self.get(sku_id)
        return holding is not None and holding.via_group

    def groups_covering(self, sku_id: str) -> tuple[str, ...]:
        """The groups through which the user holds this SKU (empty when none)."""
        holding = self.get(sku_id)
        return holding.group_ids if holding is not None else ()

    def redundant_direct(self, sku_id: str) -> bool:
        """Whether the direct assignment of this SKU is redundant: a group gives the same SKU, same disabled plans."""
        holding = self.get(sku_id)
        return holding is not None and holding.redundant_direct

    def redundant_direct_skus(self) -> tuple[SkuHolding, ...]:
        """The holdings whose direct assignment a group already covers."""
        return tuple(h for h in self.skus if h.redundant_direct)

    def failures(self) -> tuple[tuple[str, GroupFailure], ...]:
        """(skuId, failure) for every group assignment in error."""
        return tuple((h.sku_id, f) for h in self.skus for f in h.failures)

    def direct(self) -> dict[str, tuple[str, ...]]:
        """skuId → disabled plans of the direct assignments."""
        return {h.sku_id: h.direct for h in self.skus if h.direct is not None}

    def effective(self) -> dict[str, tuple[str, ...]]:
        """skuId → plans off for the user, for every SKU held: what `assignedLicenses` says."""
        return {h.sku_id: h.effective_disabled() for h in self.skus if h.held}

    def with_direct(self, direct: Mapping[str, Iterable[str]]) -> Holdings:
        """The same group assignments with these direct ones instead (what a user's assignLicense leaves)."""
        wanted = {sku.lower(): _plans(plans) for sku, plans in direct.items()}
        by_sku = {h.sku_id: replace(h, direct=wanted.get(h.sku_id)) for h in self.skus}
        by_sku.update({sku: SkuHolding(sku, plans) for sku, plans in wanted.items() if sku not in by_sku})
        kept = (h for h in by_sku.values() if h.direct is not None or h.groups or h.failures)
        return Holdings(tuple(sorted(kept, key=lambda h: h.sku_id)), self.states_known)

    def to_graph(self) -> list[dict[str, Any]]:
        """`licenseAssignmentStates` as Graph writes them (direct first, then each group's), for storage."""
        states: list[dict[str, Any]] = [
            {"skuId": h.sku_id, "assignedByGroup": None, "disabledPlans": list(h.direct), "state": "Active",
             "error": "None"} for h in self.skus if h.direct is not None]
        for h in self.skus:
            states.extend({"skuId": h.sku_id, "assignedByGroup": g.group_id, "disabledPlans": list(g.disabled_plans),
                           "state": g.state.value, "error": g.error.value} for g in h.groups)
            states.extend({"skuId": h.sku_id, "assignedByGroup": f.group_id, "disabledPlans": list(f.disabled_plans),
                           "state": f.state.value, "error": f.error.value} for f in h.failures if not f.holds)
        return states

    def group_ids(self) -> tuple[str, ...]:
        """Every group that gives or failed to give this user a license: holders first, by SKU, without repeats."""
        seen = [g.group_id for h in self.skus for g in h.groups] + [f.group_id for h in self.skus for f in h.failures]
        return tuple(dict.fromkeys(seen))


def _plans(raw: Iterable[Any]) -> tuple[str, ...]:
    """Disabled plan ids, lower-case, sorted, without repeats."""
    return tuple(sorted({str(p).lower() for p in raw}))
