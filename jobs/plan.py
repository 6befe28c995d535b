"""The plan for one user: what the job would change, given the user's current state in Graph.

Pure functions, no I/O: the executor reads users and calls `plan_user`; dry runs record the plan,
real jobs act on it. A plan never guesses what Graph alone can know (plan conflicts): it warns.
An operation that expects a state (a rollback's) is planned only while the user is still in it:
otherwise the user has drifted and is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from jobs.holdings import Holdings
from jobs.models import Assignment, ExpectedState, GroupLink, License, LicenseMode, Operation, PlanNote, Reason
from jobs.skus import SkuCatalog


class PlanOutcome(StrEnum):
    """What the plan decided for a user."""

    CHANGE = "change"
    UNCHANGED = "unchanged"
    FAIL = "fail"


@dataclass(frozen=True)
class UserState:
    """The license-relevant state of one user, as read from Graph (or as a plan predicts it); ids lower-case.

    `licenses` is what the user holds however assigned (Graph's `assignedLicenses`); `holdings` says
    how (directly, through which groups), None when not known (a state stored without
    `licenseAssignmentStates`: every license then counts as direct).
    """

    licenses: tuple[License, ...] = ()
    usage_location: str | None = None
    user_id: str | None = None
    upn: str | None = None
    holdings: Holdings | None = None

    @classmethod
    def from_graph(cls, body: Mapping[str, Any]) -> UserState:
        """From a Graph user with `id, userPrincipalName, assignedLicenses, licenseAssignmentStates, usageLocation`."""
        licenses = tuple(
            License(str(item.get("skuId", "")).lower(),
                    tuple(sorted(str(p).lower() for p in item.get("disabledPlans") or ())))
            for item in body.get("assignedLicenses") or ()
        )
        holdings = Holdings.from_graph(body) if body.get("licenseAssignmentStates") is not None else None
        return cls(
            licenses=tuple(sorted(licenses, key=lambda lic: lic.sku_id)),
            usage_location=body.get("usageLocation") or None,
            user_id=body.get("id"),
            upn=body.get("userPrincipalName"),
            holdings=holdings,
        )

    def held(self) -> dict[str, tuple[str, ...]]:
        """skuId → disabled plans, for the licenses held (however assigned)."""
        return {lic.sku_id: lic.disabled_plans for lic in self.licenses}

    def direct(self) -> dict[str, tuple[str, ...]]:
        """skuId → disabled plans of the direct assignments (every license, when how is not known)."""
        return self.holdings.direct() if self.holdings is not None else self.held()

    def inherited(self, sku_id: str) -> tuple[str, ...]:
        """The groups through which the user holds this SKU (empty: none, or not known)."""
        return self.holdings.groups_covering(sku_id) if self.holdings is not None else ()

    def same_as(self, other: UserState) -> bool:
        """Whether licenses (with disabled plans), direct assignments (where both know them) and location are equal."""
        direct_same = self.holdings is None or other.holdings is None or self.direct() == other.direct()
        return self.held() == other.held() and direct_same and self.usage_location == other.usage_location

    def to_json(self) -> dict[str, Any]:
        """Graph-shaped JSON: `{"assignedLicenses": [...], "usageLocation"}` plus the user's ids (and
        `licenseAssignmentStates` when known)."""
        data: dict[str, Any] = {
            "assignedLicenses": [lic.to_json() for lic in self.licenses],
            "usageLocation": self.usage_location,
        }
        if self.holdings is not None:
            data["licenseAssignmentStates"] = self.holdings.to_graph()
        if self.user_id:
            data["id"] = self.user_id
        if self.upn:
            data["userPrincipalName"] = self.upn
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UserState:
        """Inverse of `to_json`."""
        return cls.from_graph(data)


@dataclass(frozen=True)
class UserPlan:
    """The plan for one user."""

    outcome: PlanOutcome
    before: UserState | None
    after: UserState | None = None
    reason: Reason | None = None
    message: str | None = None
    set_location: bool = False
    assign: bool = False
    seats_needed: tuple[str, ...] = ()
    seats_released: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    # The assignLicense call: the operation's own lists, or (mode=exact) what the user's state calls for.
    add: tuple[License, ...] = ()
    remove: tuple[str, ...] = ()
    # `held_via_group` when adds a group already gives were left out; the groups behind the operation's licenses.
    note: PlanNote | None = None
    groups: tuple[GroupLink, ...] = ()

    def action(self, catalog: SkuCatalog) -> str:
        """What the plan does, in words an admin reads (part numbers, not ids)."""
        if self.outcome is not PlanOutcome.CHANGE or self.before is None or self.after is None:
            return "none"
        return describe_change(self.before, self.after, catalog)


def plan_user(op: Operation, state: UserState | None, catalog: SkuCatalog) -> UserPlan:
    """Decide unchanged, change or predicted failure for one user (`state` None: not found)."""
    if state is None:
        return UserPlan(PlanOutcome.FAIL, None, reason=Reason.USER_NOT_FOUND,
                        message=f"user '{op.user}' does not exist in the tenant")
    if op.expect is not None:
        guarded = _guard(op, state, catalog)
        if guarded is not None:
            return guarded
    links = group_links(op, state)
    listed = op.add
    if op.mode is LicenseMode.EXACT:
        op = replace(op, add=exact_additions(op, state), remove=exact_removals(op, state), mode=LicenseMode.ADD)
    inherited = [sku.lower() for sku in op.remove if sku.lower() not in state.direct() and state.inherited(sku)]
    if inherited:
        return UserPlan(PlanOutcome.FAIL, state, reason=Reason.INHERITED_FROM_GROUP,
                        message=inherited_message(inherited, state, catalog), groups=links)
    asked_add = op.add
    covered = covered_adds(op, state)
    if covered:
        op = replace(op, add=tuple(a for a in op.add if a not in covered))
    # Noted too: under mode=exact, a listed license only a group gives, which exact mode did not add.
    left_to_groups = [a for a in listed if a not in op.add and a.sku_id.lower() not in state.direct()
                      and state.inherited(a.sku_id)]
    note = PlanNote.HELD_VIA_GROUP if covered or left_to_groups else None
    held = state.held()
    missing = [sku for sku in op.remove if sku.lower() not in held]
    after = predicted_after(op, state)
    # A swap already done (the adds held as asked, the removals gone) is unchanged; any other
    # removal of a license the user lacks is refused by Graph, so it is known now.
    if missing and not (asked_add and after.same_as(state)):
        names = ", ".join(catalog.part_number(sku) for sku in missing)
        return UserPlan(PlanOutcome.FAIL, state, reason=Reason.LICENSE_NOT_ASSIGNED,
                        message=f"the user does not hold {names}, which the row removes", groups=links)
    location = op.usage_location or state.usage_location
    if op.add and not location:
        return UserPlan(PlanOutcome.FAIL, state, reason=Reason.USAGE_LOCATION_MISSING,
                        message="the user has no usage location and the row sets none", groups=links)
    if after.same_as(state):
        return UserPlan(PlanOutcome.UNCHANGED, state, after=state, note=note, groups=links)
    after_held = after.held()
    return UserPlan(
        PlanOutcome.CHANGE,
        state,
        after=after,
        set_location=after.usage_location != state.usage_location,
        assign=after_held != held or after.direct() != state.direct(),
        seats_needed=tuple(a.sku_id.lower() for a in op.add if a.sku_id.lower() not in held),
        # A license still held through a group after the direct one is removed keeps its seat.
        seats_released=tuple(sku.lower() for sku in op.remove if sku.lower() not in after_held),
        warnings=tuple(conflict_warnings(op, state, catalog)),
        add=op.add,
        remove=op.remove,
        note=note,
        groups=links,
    )


def group_links(op: Operation, state: UserState) -> tuple[GroupLink, ...]:
    """The groups through which the user holds the licenses the operation names (under mode=exact: any)."""
    if state.holdings is None:
        return ()
    if op.mode is LicenseMode.EXACT:
        skus = [h.sku_id for h in state.holdings.skus]
    else:
        skus = list(dict.fromkeys([a.sku_id.lower() for a in op.add] + [sku.lower() for sku in op.remove]))
    return tuple(GroupLink(sku, gid) for sku in skus for gid in state.inherited(sku))


def covered_adds(op: Operation, state: UserState) -> tuple[License, ...]:
    """Adds a group already gives (the user holds the SKU through it, and a direct add would change no plan).

    Under `assignment=direct` none: the admin asked for the direct assignment itself.
    """
    if op.assignment is Assignment.DIRECT or state.holdings is None:
        return ()
    held, direct = state.held(), state.direct()
    return tuple(add for add in op.add
                 if add.sku_id.lower() not in direct and state.inherited(add.sku_id)
                 and _with_groups(state, add.sku_id.lower(), _plans(add)) == held.get(add.sku_id.lower()))


def inherited_message(skus: Sequence[str], state: UserState, catalog: SkuCatalog) -> str:
    """Why removing licenses held only through groups is refused, naming the groups."""
    parts = [f"{catalog.part_number(sku)} from group {', '.join(state.inherited(sku))}" for sku in skus]
    return (f"the user holds {'; '.join(parts)} and not directly: a license inherited from a group cannot be "
            "removed from the user (remove the user from the group, or the license from the group)")


def exact_additions(op: Operation, state: UserState) -> tuple[License, ...]:
    """Under mode=exact, the listed licenses to assign: those not held, and those whose row sets other disabled plans.

    A held license the row names without plans keeps the plans disabled in it now: `exact` is
    about which licenses a user holds.
    """
    held = state.direct() if op.assignment is Assignment.DIRECT else state.held()
    return tuple(add for add in op.add
                 if add.sku_id.lower() not in held or (add.disabled_plans and _plans(add) != held[add.sku_id.lower()]))


def exact_removals(op: Operation, state: UserState) -> tuple[str, ...]:
    """Under mode=exact, the held licenses to remove: every one the operation does not list.

    This is the one place that decides what exact mode may take away: a license a user holds only
    through a group cannot be removed directly, so only direct assignments are (the user keeps an
    unlisted license a group gives; the result names the group).
    """
    listed = {add.sku_id.lower() for add in op.add}
    return tuple(sku for sku in state.direct() if sku not in listed)


def _guard(op: Operation, state: UserState, catalog: SkuCatalog) -> UserPlan | None:
    """For an operation that expects a state: None while the user is in it, else unchanged or drifted.

    A user already where the operation would take it (someone undid the job by hand) is unchanged;
    any other difference is drift: what the operation would write is no longer known to be right.
    """
    assert op.expect is not None
    expected = expected_state(op.expect)
    differences = drift(expected, state, catalog)
    if not differences:
        return None
    same_account = not (expected.user_id and state.user_id and expected.user_id != state.user_id)
    if same_account and predicted_after(op, expected).same_as(state):
        return UserPlan(PlanOutcome.UNCHANGED, state, after=state)
    return UserPlan(PlanOutcome.FAIL, state, reason=Reason.DRIFTED,
                    message=f"changed since the job: {'; '.join(differences)}")


def expected_state(expect: ExpectedState) -> UserState:
    """The state an operation expects, as a UserState (ids lower-case, sorted)."""
    return UserState(
        licenses=tuple(sorted((License(lic.sku_id.lower(), tuple(sorted(p.lower() for p in lic.disabled_plans)))
                               for lic in expect.licenses), key=lambda lic: lic.sku_id)),
        usage_location=expect.usage_location or None,
        user_id=expect.user_id,
    )


def drift(expected: UserState, state: UserState, catalog: SkuCatalog) -> list[str]:
    """What differs between the state a job left and the user's state now, in words (empty: nothing)."""
    found = []
    if expected.user_id and state.user_id and expected.user_id != state.user_id:
        found.append(f"the name now stands for another account ({state.user_id}) than the one the job changed "
                     f"({expected.user_id})")
    if state.usage_location != expected.usage_location:
        found.append(f"usage location is {state.usage_location or 'not set'}, "
                     f"the job left {expected.usage_location or 'none'}")
    left, now = expected.held(), state.held()
    for sku, plans in now.items():
        if sku not in left:
            found.append(f"holds {license_label(catalog, sku, plans)}, which the job did not leave")
        elif plans != left[sku]:
            found.append(f"{catalog.part_number(sku)} has {_off(catalog, sku, plans)}, "
                         f"the job left {_off(catalog, sku, left[sku])}")
    found.extend(f"does not hold {catalog.part_number(sku)}, which the job left" for sku in left if sku not in now)
    return found


def _off(catalog: SkuCatalog, sku_id: str, disabled: Sequence[str]) -> str:
    """'SWAY, YAMMER_ENTERPRISE off' or 'every plan on'."""
    if not disabled:
        return "every plan on"
    return f"{', '.join(plan_name(catalog, sku_id, p) for p in disabled)} off"


def predicted_after(op: Operation, state: UserState) -> UserState:
    """The state the user will be in once the operation applied (re-adding replaces disabled plans).

    Group assignments stay: a SKU a group gives stays held, its plans those every assignment disables.
    """
    held = state.held()
    holdings = None
    if state.holdings is not None:
        direct = state.direct()
        for sku in op.remove:
            direct.pop(sku.lower(), None)
        for add in op.add:
            direct[add.sku_id.lower()] = _plans(add)
        holdings = state.holdings.with_direct(direct)
        effective = holdings.effective()
        for sku in {s.lower() for s in op.remove} | {a.sku_id.lower() for a in op.add}:
            held.pop(sku, None)
            if sku in effective:
                held[sku] = effective[sku]
    else:
        for sku in op.remove:
            held.pop(sku.lower(), None)
        for add in op.add:
            held[add.sku_id.lower()] = _plans(add)
    return UserState(
        licenses=tuple(License(sku, plans) for sku, plans in sorted(held.items())),
        usage_location=op.usage_location or state.usage_location,
        user_id=state.user_id,
        upn=state.upn,
        holdings=holdings,
    )


def _with_groups(state: UserState, sku_id: str, direct_plans: tuple[str, ...]) -> tuple[str, ...] | None:
    """The plans off for a SKU if it were assigned directly with `direct_plans` beside the user's groups."""
    if state.holdings is None:
        return direct_plans
    return state.holdings.with_direct({**state.direct(), sku_id: direct_plans}).effective().get(sku_id)


def _plans(add: License) -> tuple[str, ...]:
    return tuple(sorted(p.lower() for p in add.disabled_plans))


# Plan-name endings that mark tiers of one service (Exchange Online Plan 1 vs 2, SharePoint
# Plan 1 vs 2): two tiers of one service in two licenses are what Graph refuses as conflicting.
_TIER_RE = re.compile(r"_?(?:S_)?(?:STANDARD|ENTERPRISE|DESKLESS|BASIC)$")


def conflict_warnings(op: Operation, state: UserState, catalog: SkuCatalog) -> list[str]:
    """`may_conflict` warnings: an added SKU and a kept SKU enable different tiers of one service."""
    removed = {sku.lower() for sku in op.remove}
    added = {a.sku_id.lower(): _plans(a) for a in op.add}
    kept = {sku: plans for sku, plans in state.held().items() if sku not in removed and sku not in added}
    warnings = []
    for add_sku, add_disabled in added.items():
        add_tiers = _tiers(catalog, add_sku, add_disabled)
        for held_sku, held_disabled in kept.items():
            clash = _clash(add_tiers, _tiers(catalog, held_sku, held_disabled))
            if clash:
                warnings.append(f"{catalog.part_number(add_sku)} and the held {catalog.part_number(held_sku)} "
                                f"both enable {clash}; Graph may refuse them together")
    return warnings


def _tiers(catalog: SkuCatalog, sku_id: str, disabled: Sequence[str]) -> dict[str, str]:
    """Service family → enabled plan name, for the tiered plans of a SKU."""
    sku = catalog.get(sku_id)
    if sku is None:
        return {}
    off = set(disabled)
    tiers = {}
    for plan in sku.plans:
        family = _TIER_RE.sub("", plan.name.upper())
        if plan.plan_id not in off and family != plan.name.upper():
            tiers[family] = plan.name
    return tiers


def _clash(a: Mapping[str, str], b: Mapping[str, str]) -> str:
    """The first family enabled at different tiers in both, as 'X and Y', or ''."""
    for family, plan in a.items():
        other = b.get(family)
        if other is not None and other != plan:
            return f"{plan} and {other}"
    return ""


def describe_change(before: UserState, after: UserState, catalog: SkuCatalog) -> str:
    """'set usage location GB; add ENTERPRISEPACK (SWAY off); remove STANDARDPACK' and the like."""
    parts = []
    if after.usage_location != before.usage_location:
        parts.append(f"set usage location {after.usage_location}")
    old, new = before.held(), after.held()
    for sku, plans in new.items():
        if sku not in old:
            parts.append(f"add {license_label(catalog, sku, plans)}")
        elif old[sku] != plans:
            parts.append(f"change disabled plans of {license_label(catalog, sku, plans)}")
    parts.extend(f"remove {catalog.part_number(sku)}" for sku in old if sku not in new)
    if before.holdings is not None and after.holdings is not None:
        was, now = before.direct(), after.direct()
        parts.extend(f"assign {license_label(catalog, sku, plans)} directly (also held through a group)"
                     for sku, plans in now.items() if sku not in was and sku in old and sku in new)
        parts.extend(f"remove the direct {catalog.part_number(sku)} (still held through a group)"
                     for sku in was if sku not in now and sku in new)
    return "; ".join(parts) or "none"


def license_label(catalog: SkuCatalog, sku_id: str, disabled: Sequence[str]) -> str:
    """'ENTERPRISEPACK (SWAY off)': the part number with its disabled plans by name."""
    name = catalog.part_number(sku_id)
    if not disabled:
        return name
    return f"{name} ({', '.join(plan_name(catalog, sku_id, p) for p in disabled)} off)"


def plan_name(catalog: SkuCatalog, sku_id: str, plan_id: str) -> str:
    """A service plan's name in a SKU (its id when the catalog does not know it)."""
    sku = catalog.get(sku_id)
    return next((p.name for p in sku.plans if p.plan_id == plan_id.lower()), plan_id) if sku else plan_id
