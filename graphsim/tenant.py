"""The in-memory tenant: users, groups, subscribed SKUs and the license assignment rules, direct and by group."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from graphsim.fixture import Fixture, SkuDef, conflicting_plans
from graphsim.groups import (
    AssignmentError,
    AssignmentState,
    Group,
    InheritedLicense,
    MemberKind,
)
from graphsim.lifecycle import LifecycleDef, SignInActivity, iso, resolve

# Capability states in which a SKU's seats cannot be newly assigned.
_UNASSIGNABLE_STATES = frozenset({"Suspended", "LockedOut", "Deleted"})
INHERITED_REMOVAL = "User license is inherited from a group membership and it cannot be removed directly from the user."

Licenses = dict[str, tuple[str, ...]]
# Most users are in no group: they share these empty values, and a user gets its own on its first group
# (a container per user would cost a 100,000-user tenant memory and garbage-collector time).
_NO_GROUPS: Mapping[str, Mapping[str, InheritedLicense]] = MappingProxyType({})


def utc_now_iso() -> str:
    """Now in UTC as Graph writes DateTimeOffset values."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class User:
    """A user's mutable state."""

    id: str
    upn: str
    display_name: str
    given_name: str | None
    surname: str | None
    job_title: str | None
    usage_location: str | None
    account_enabled: bool
    # skuId -> disabled plan ids, in assignment order: the direct assignments only.
    licenses: Licenses = field(default_factory=dict)
    license_updated: dict[str, str] = field(default_factory=dict)
    # The usageLocation before its latest change, and when (graphsim's clock) it changed: for replication lag.
    prior_usage_location: str | None = None
    usage_location_changed_at: float | None = None
    # Lifecycle and sign-in attributes, as epoch seconds.
    created: float = 0.0
    hire: float | None = None
    leave: float | None = None
    sign_in: SignInActivity | None = None
    # Group id -> skuId -> what the user got (or failed to get) from that group, in processing order.
    inherited: Mapping[str, Mapping[str, InheritedLicense]] = field(default_factory=lambda: _NO_GROUPS)
    # Ids of the groups the user is a direct member of.
    member_of: frozenset[str] = frozenset()

    def set_usage_location(self, value: str | None, now: float) -> None:
        """Change usageLocation, remembering the previous value and when it changed."""
        if value != self.usage_location:
            self.prior_usage_location, self.usage_location_changed_at = self.usage_location, now
            self.usage_location = value

    def usage_location_seen(self, now: float, lag_s: float) -> str | None:
        """usageLocation as a replica `lag_s` seconds behind sees it."""
        changed = self.usage_location_changed_at
        if lag_s > 0 and changed is not None and now - changed < lag_s:
            return self.prior_usage_location
        return self.usage_location

    def inherited_holdings(self, except_group: str | None = None) -> list[tuple[str, tuple[str, ...]]]:
        """(skuId, disabled plans) of every group assignment the user holds (Active or ActiveWithError)."""
        return [(sku, lic.disabled) for gid, per in self.inherited.items() if gid != except_group
                for sku, lic in per.items() if lic.holds]

    def held_skus(self) -> set[str]:
        """The SKUs the user holds by any path: each takes one seat however many paths lead to it."""
        held = set(self.licenses)
        held.update(sku for sku, _ in self.inherited_holdings())
        return held

    def inherits(self, sku: str) -> bool:
        """Whether any group assigns `sku` to the user (in whatever state)."""
        return any(sku in per for per in self.inherited.values())

    def effective_licenses(self) -> Licenses:
        """skuId -> disabled plans of what the user holds: direct and group assignments, one entry per SKU.

        A plan is disabled only if every assignment of the SKU disables it: the user gets the union of the
        plans each assignment enables (Entra's "all enabled services being applied to the user").
        """
        if not self.inherited:
            return self.licenses
        result: dict[str, tuple[str, ...]] = dict(self.licenses)
        for sku, disabled in self.inherited_holdings():
            if sku in result:
                keep = set(disabled)
                result[sku] = tuple(p for p in result[sku] if p in keep)
            else:
                result[sku] = disabled
        return result

    def assigned_licenses(self) -> list[dict[str, Any]]:
        """`assignedLicenses` as Graph returns it: direct and inherited, one entry per SKU."""
        return [{"disabledPlans": list(plans), "skuId": sku} for sku, plans in self.effective_licenses().items()]

    def license_states(self) -> list[dict[str, Any]]:
        """`licenseAssignmentStates`: the direct assignments, then each group's, errors included."""
        states = [
            {"assignedByGroup": None, "disabledPlans": list(plans), "error": "None",
             "lastUpdatedDateTime": self.license_updated.get(sku), "skuId": sku, "state": "Active"}
            for sku, plans in self.licenses.items()
        ]
        states.extend(
            {"assignedByGroup": gid, "disabledPlans": list(lic.disabled), "error": lic.error.value,
             "lastUpdatedDateTime": lic.updated, "skuId": sku, "state": lic.state.value}
            for gid, per in self.inherited.items() for sku, lic in per.items()
        )
        return states

    def sign_in_json(self) -> dict[str, Any] | None:
        """`signInActivity`, or None for a user who never signed in."""
        return None if self.sign_in is None else self.sign_in.json(self.id)

    def summary(self) -> dict[str, Any]:
        """The control surface's view of a user."""
        return {"id": self.id, "userPrincipalName": self.upn, "displayName": self.display_name,
                "usageLocation": self.usage_location, "assignedLicenses": self.assigned_licenses()}

    def lifecycle(self) -> dict[str, Any]:
        """The control surface's view of the lifecycle and sign-in attributes."""
        return {"accountEnabled": self.account_enabled, "createdDateTime": iso(self.created),
                "employeeHireDate": iso(self.hire), "employeeLeaveDateTime": iso(self.leave),
                "signInActivity": self.sign_in_json()}


@dataclass(frozen=True)
class LicenseError:
    """Why an assignLicense call is refused: HTTP status, Graph error code and message."""

    status: int
    code: str
    message: str


def _bad(message: str) -> LicenseError:
    # Every license failure observed so far is 400 Request_BadRequest; only the message differs.
    return LicenseError(400, "Request_BadRequest", message)


class Tenant:
    """The tenant's directory state; every mutation runs without awaiting, so it is atomic."""

    def __init__(self, fixture: Fixture, now: float | None = None) -> None:
        self.fixture = fixture
        self.tenant_id = fixture.tenant_id
        self.country = fixture.country
        self.prohibited_locations = fixture.prohibited_locations
        self.skus: dict[str, SkuDef] = {s.sku_id: s for s in fixture.skus}
        self.consumed: dict[str, int] = {s.sku_id: 0 for s in fixture.skus}
        self.users: dict[str, User] = {}
        self._by_upn: dict[str, User] = {}
        self.user_order: list[User] = []
        self.groups: dict[str, Group] = {}
        self.group_order: list[Group] = []
        # Users Graph does not see yet (not replicated): id -> the clock time from which it does.
        self._hidden_until: dict[str, float] = {}
        wall = time.time() if now is None else now
        created = utc_now_iso()
        for u in fixture.users:
            user = User(u.id.lower(), u.upn, u.display_name, u.given_name, u.surname, u.job_title,
                        u.usage_location, u.lifecycle.enabled, dict(u.licenses),
                        {sku: created for sku, _ in u.licenses})
            _set_lifecycle(user, u.lifecycle, wall)
            self.users[user.id] = user
            self._by_upn[user.upn.lower()] = user
            self.user_order.append(user)
            for sku, _ in u.licenses:
                self.consumed[sku] = self.consumed.get(sku, 0) + 1
        self._load_groups(wall, created)

    def _load_groups(self, wall: float, processed: str) -> None:
        """The fixture's groups, processed at once in order (so seat-limited SKUs run out for the last)."""
        for g in self.fixture.groups:
            group = Group(g.id, g.display_name, nickname(g.display_name), None, wall - g.created_ago_s,
                          licenses=dict(g.licenses))
            self._register_group(group)
            self.add_members(group, [(member, MemberKind.USER) for member in g.members if member in self.users])
            for member in group.user_members():
                self.apply_group(self.users[member], group, processed)

    # -- users -----------------------------------------------------------------------------------------

    def find_user(self, key: str) -> User | None:
        """A user by id or userPrincipalName (case-insensitive), visible to Graph or not."""
        key = key.lower()
        return self.users.get(key) or self._by_upn.get(key)

    def _visible(self, user: User, now: float) -> bool:
        until = self._hidden_until.get(user.id)
        if until is None:
            return True
        if now >= until:
            del self._hidden_until[user.id]
            return True
        return False

    def visible_user(self, key: str, now: float) -> User | None:
        """A user by id or userPrincipalName as Graph sees it at `now` (None until replicated)."""
        user = self.find_user(key)
        if user is None or not self._hidden_until or self._visible(user, now):
            return user
        return None

    def visible_users(self, now: float) -> list[User]:
        """All users in order, as Graph sees them at `now`."""
        if not self._hidden_until:
            return self.user_order
        return [u for u in self.user_order if self._visible(u, now)]

    def add_user(self, upn: str, usage_location: str | None, visible_from: float | None) -> User:
        """Create a user; Graph sees it only from `visible_from` (None: at once). ValueError if the UPN is taken."""
        if upn.lower() in self._by_upn:
            raise ValueError(f"userPrincipalName {upn!r} is already taken")
        local = upn.split("@")[0]
        user = User(str(uuid.uuid4()), upn, local, None, None, None, usage_location, True, created=time.time())
        self.users[user.id] = user
        self._by_upn[upn.lower()] = user
        self.user_order.append(user)
        if visible_from is not None:
            self._hidden_until[user.id] = visible_from
        return user

    # -- SKUs ------------------------------------------------------------------------------------------

    def set_enabled_seats(self, sku_key: str, enabled: int) -> SkuDef:
        """Set a SKU's prepaidUnits.enabled (by skuId or part number); KeyError when absent."""
        found = self.skus.get(sku_key.lower()) or self.sku_by_part(sku_key)
        self.skus[found.sku_id] = updated = replace(found, enabled=enabled)
        return updated

    def sku_by_part(self, part_number: str) -> SkuDef:
        """A SKU by its part number (e.g. ENTERPRISEPACK); KeyError when absent."""
        for sku in self.skus.values():
            if sku.part_number == part_number:
                return sku
        raise KeyError(part_number)

    def free_seats(self, sku: str) -> int:
        """prepaidUnits.enabled - consumedUnits for a SKU given by skuId or part number."""
        found = self.skus.get(sku.lower()) or self.sku_by_part(sku)
        return found.enabled - self.consumed[found.sku_id]

    def sku_json(self, sku: SkuDef) -> dict[str, Any]:
        """One subscribedSku as Graph returns it."""
        return {
            "accountId": self.tenant_id,
            "accountName": self.fixture.domain.split(".")[0],
            "appliesTo": sku.applies_to,
            "capabilityStatus": sku.capability_status,
            "consumedUnits": self.consumed[sku.sku_id],
            "id": f"{self.tenant_id}_{sku.sku_id}",
            "skuId": sku.sku_id,
            "skuPartNumber": sku.part_number,
            "subscriptionIds": [],
            "prepaidUnits": {"enabled": sku.enabled, "suspended": sku.suspended, "warning": sku.warning,
                             "lockedOut": sku.locked_out},
            "servicePlans": [
                {"servicePlanId": p.plan_id, "servicePlanName": p.name, "provisioningStatus": "Success",
                 "appliesTo": p.applies_to}
                for p in sku.plans
            ],
        }

    def _enabled_plans(self, licenses: Iterable[tuple[str, tuple[str, ...]]]) -> frozenset[str]:
        plans: set[str] = set()
        for sku_id, disabled in licenses:
            sku = self.skus.get(sku_id)
            if sku is not None:
                plans |= sku.plan_ids - set(disabled)
        return frozenset(plans)

    def _no_seat(self, sku_id: str) -> bool:
        sku = self.skus[sku_id]
        return sku.capability_status in _UNASSIGNABLE_STATES or self.consumed[sku_id] >= sku.enabled

    def _count_seats(self, before: set[str], after: set[str]) -> None:
        """Take a seat for every SKU the user now holds and did not, give back the ones it no longer holds."""
        for sku_id in after - before:
            self.consumed[sku_id] += 1
        for sku_id in before - after:
            self.consumed[sku_id] -= 1

    # -- direct assignment -----------------------------------------------------------------------------

    def _request_refusal(self, user: User, add: list[tuple[str, tuple[str, ...]]], remove: list[str],
                         usage_location: str | None) -> LicenseError | None:
        """What is wrong with an assignLicense request on its own: removals, SKUs, plans, usageLocation."""
        for sku_id in remove:
            if sku_id not in user.licenses:
                return _bad(INHERITED_REMOVAL if user.inherits(sku_id)
                            else "User does not have a corresponding license.")
        for sku_id, disabled in add:
            sku = self.skus.get(sku_id)
            if sku is None:
                return _bad(f"License {sku_id} does not correspond to a valid company License.")
            if sku.applies_to != "User":
                return _bad(f"License {sku_id} cannot be assigned to a user.")
            for plan in disabled:
                if plan not in sku.plan_ids:
                    return _bad(f"Invalid service plan {plan} specified in disabledPlans for "
                                f"License {sku_id}.")
        if add and not usage_location:
            return _bad("License assignment cannot be done for user with invalid usage location.")
        return None

    def assign_license(self, user: User, add: list[tuple[str, tuple[str, ...]]], remove: list[str],
                       usage_location: str | None) -> LicenseError | None:
        """Apply one assignLicense call all-or-nothing (with the usageLocation it sees); the error if refused."""
        refusal = self._request_refusal(user, add, remove, usage_location)
        if refusal is not None:
            return refusal
        result = {s: p for s, p in user.licenses.items() if s not in remove}
        result.update(add)
        inherited = user.inherited_holdings()
        # Mutually exclusive service plans are judged on what each added SKU enables against the rest,
        # the licenses the user holds through groups included.
        for sku_id, _ in add:
            others = [(s, p) for s, p in (*result.items(), *inherited) if s != sku_id]
            mine = self._enabled_plans([(sku_id, result[sku_id])])
            pair = conflicting_plans(mine, self._enabled_plans(others), self.fixture.exclusive_plans)
            if pair is not None:
                return _bad(f"License assignment failed because service plans {','.join(sorted(pair))} "
                            "are mutually exclusive.")
        held_by_groups = {s for s, _ in inherited}
        for sku_id in result:
            if sku_id not in user.licenses and sku_id not in held_by_groups and self._no_seat(sku_id):
                return _bad(f"Subscription with SKU {sku_id} does not have any available licenses.")

        # Validation passed: commit seats and the user's licenses together.
        now = utc_now_iso()
        before = user.held_skus()
        for sku_id in remove:
            if sku_id not in result:
                user.license_updated.pop(sku_id, None)
        for sku_id, _ in add:
            user.license_updated[sku_id] = now
        user.licenses = result
        self._count_seats(before, user.held_skus())
        return None

    # -- groups ----------------------------------------------------------------------------------------

    def _register_group(self, group: Group) -> None:
        self.groups[group.id] = group
        self.group_order.append(group)

    def add_group(self, display_name: str, mail_nickname: str, description: str | None) -> Group:
        """Create an empty security group."""
        group = Group(str(uuid.uuid4()), display_name, mail_nickname, description, time.time())
        self._register_group(group)
        return group

    def find_group(self, key: str) -> Group | None:
        """A group by id (case-insensitive)."""
        return self.groups.get(key.lower())

    def delete_group(self, group: Group) -> None:
        """Delete a group (the caller made sure it holds no licenses); members keep their other groups."""
        group.deleted = True
        del self.groups[group.id]
        self.group_order.remove(group)
        for member in group.user_members():
            user = self.users[member]
            user.member_of = user.member_of - {group.id}

    def add_members(self, group: Group, members: list[tuple[str, MemberKind]]) -> None:
        """Add members (already checked: they exist and are not members yet)."""
        for member, kind in members:
            group.members[member] = kind
            if kind is MemberKind.USER:
                user = self.users[member]
                user.member_of = user.member_of | {group.id}

    def remove_member(self, group: Group, member: str) -> None:
        """Remove one member (already checked to be one); its licenses go when the group is processed."""
        kind = group.members.pop(member)
        if kind is MemberKind.USER:
            user = self.users[member]
            user.member_of = user.member_of - {group.id}

    def apply_group(self, user: User, group: Group, updated: str) -> None:
        """Bring the user's assignments from `group` in line with the group's licenses and membership.

        All or nothing per user and group: if one of the group's SKUs cannot be assigned, none is (Entra
        "won't assign the other licenses in the group either"); assignments the user already held stay,
        in ActiveWithError. Seats are counted once per user and SKU, whatever path holds it.
        """
        before = user.held_skus()
        current = user.inherited.get(group.id, {})
        wanted = group.licenses if not group.deleted and group.members.get(user.id) is MemberKind.USER else {}
        if not wanted:
            if group.id in user.inherited:
                user.inherited = {gid: per for gid, per in user.inherited.items() if gid != group.id} or _NO_GROUPS
            group.error_members.discard(user.id)
        else:
            failure = self._group_failure(user, group, wanted, current)
            states: dict[str, InheritedLicense] = {}
            for sku, disabled in wanted.items():
                old = current.get(sku)
                if failure is None:
                    new = InheritedLicense(disabled, AssignmentState.ACTIVE, AssignmentError.NONE, updated)
                elif old is not None and old.holds:
                    new = InheritedLicense(old.disabled, AssignmentState.ACTIVE_WITH_ERROR, failure, updated)
                else:
                    new = InheritedLicense(disabled, AssignmentState.ERROR, failure, updated)
                states[sku] = old if old is not None and replace(new, updated=old.updated) == old else new
            user.inherited = {**user.inherited, group.id: states}
            if failure is None:
                group.error_members.discard(user.id)
            else:
                group.error_members.add(user.id)
        self._count_seats(before, user.held_skus())

    def _group_failure(self, user: User, group: Group, wanted: Licenses,
                       current: Mapping[str, InheritedLicense]) -> AssignmentError | None:
        """Why the group's licenses cannot all be assigned to the user, or None when they can."""
        location = user.usage_location or self.country  # group licensing falls back to the directory's
        if location in self.prohibited_locations:
            return AssignmentError.LOCATION
        others = [*user.licenses.items(), *user.inherited_holdings(except_group=group.id)]
        for sku, disabled in wanted.items():
            rest = [(s, d) for s, d in (*others, *wanted.items()) if s != sku]
            if conflicting_plans(self._enabled_plans([(sku, disabled)]), self._enabled_plans(rest),
                                 self.fixture.exclusive_plans) is not None:
                return AssignmentError.EXCLUSIVE
        held_elsewhere = {s for s, _ in others}
        for sku in wanted:
            holding = current.get(sku)
            if sku in held_elsewhere or (holding is not None and holding.holds):
                continue
            if sku not in self.skus or self._no_seat(sku):
                return AssignmentError.COUNT
        return None


def _set_lifecycle(user: User, lifecycle: LifecycleDef, now: float) -> None:
    created = resolve(lifecycle.created, now)
    user.created = now if created is None else created
    user.hire = resolve(lifecycle.hire, now, midnight=True)
    user.leave = resolve(lifecycle.leave, now)
    user.sign_in = None if lifecycle.sign_in is None else SignInActivity.resolve(lifecycle.sign_in, now)


def nickname(display_name: str) -> str:
    """A mailNickname from a display name (letters and digits only)."""
    return "".join(c for c in display_name if c.isalnum()) or "group"
