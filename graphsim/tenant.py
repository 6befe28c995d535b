"""The in-memory tenant: users, subscribed SKUs and the license assignment rules."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from graphsim.fixture import Fixture, SkuDef, conflicting_plans

# Capability states in which a SKU's seats cannot be newly assigned.
_UNASSIGNABLE_STATES = frozenset({"Suspended", "LockedOut", "Deleted"})


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
    # skuId -> disabled plan ids, in assignment order.
    licenses: dict[str, tuple[str, ...]] = field(default_factory=dict)
    license_updated: dict[str, str] = field(default_factory=dict)
    # The usageLocation before its latest change, and when (graphsim's clock) it changed: for replication lag.
    prior_usage_location: str | None = None
    usage_location_changed_at: float | None = None

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

    def assigned_licenses(self) -> list[dict[str, Any]]:
        """`assignedLicenses` as Graph returns it."""
        return [{"disabledPlans": list(plans), "skuId": sku} for sku, plans in self.licenses.items()]

    def license_states(self) -> list[dict[str, Any]]:
        """`licenseAssignmentStates` (direct assignments only)."""
        return [
            {"assignedByGroup": None, "disabledPlans": list(plans), "error": "None",
             "lastUpdatedDateTime": self.license_updated.get(sku), "skuId": sku, "state": "Active"}
            for sku, plans in self.licenses.items()
        ]

    def summary(self) -> dict[str, Any]:
        """The control surface's view of a user."""
        return {"id": self.id, "userPrincipalName": self.upn, "displayName": self.display_name,
                "usageLocation": self.usage_location, "assignedLicenses": self.assigned_licenses()}


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

    def __init__(self, fixture: Fixture) -> None:
        self.fixture = fixture
        self.tenant_id = fixture.tenant_id
        self.skus: dict[str, SkuDef] = {s.sku_id: s for s in fixture.skus}
        self.consumed: dict[str, int] = {s.sku_id: 0 for s in fixture.skus}
        self.users: dict[str, User] = {}
        self._by_upn: dict[str, User] = {}
        self.user_order: list[User] = []
        # Users Graph does not see yet (not replicated): id -> the clock time from which it does.
        self._hidden_until: dict[str, float] = {}
        created = utc_now_iso()
        for u in fixture.users:
            user = User(u.id.lower(), u.upn, u.display_name, u.given_name, u.surname, u.job_title,
                        u.usage_location, u.account_enabled, dict(u.licenses),
                        {sku: created for sku, _ in u.licenses})
            self.users[user.id] = user
            self._by_upn[user.upn.lower()] = user
            self.user_order.append(user)
            for sku, _ in u.licenses:
                self.consumed[sku] = self.consumed.get(sku, 0) + 1

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
        user = User(str(uuid.uuid4()), upn, local, None, None, None, usage_location, True)
        self.users[user.id] = user
        self._by_upn[upn.lower()] = user
        self.user_order.append(user)
        if visible_from is not None:
            self._hidden_until[user.id] = visible_from
        return user

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

    def _enabled_plans(self, licenses: dict[str, tuple[str, ...]]) -> frozenset[str]:
        plans: set[str] = set()
        for sku_id, disabled in licenses.items():
            sku = self.skus.get(sku_id)
            if sku is not None:
                plans |= sku.plan_ids - set(disabled)
        return frozenset(plans)

    def assign_license(self, user: User, add: list[tuple[str, tuple[str, ...]]], remove: list[str],
                       usage_location: str | None) -> LicenseError | None:
        """Apply one assignLicense call all-or-nothing (with the usageLocation it sees); the error if refused."""
        for sku_id in remove:
            if sku_id not in user.licenses:
                return _bad("User does not have a corresponding license.")
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

        result = {s: p for s, p in user.licenses.items() if s not in remove}
        result.update(add)
        # Mutually exclusive service plans are judged on what each added SKU enables against the rest.
        for sku_id, _ in add:
            others = {s: p for s, p in result.items() if s != sku_id}
            mine = self._enabled_plans({sku_id: result[sku_id]})
            pair = conflicting_plans(mine, self._enabled_plans(others), self.fixture.exclusive_plans)
            if pair is not None:
                return _bad(f"License assignment failed because service plans {','.join(sorted(pair))} "
                            "are mutually exclusive.")
        newly = [sku_id for sku_id in result if sku_id not in user.licenses]
        for sku_id in newly:
            sku = self.skus[sku_id]
            if sku.capability_status in _UNASSIGNABLE_STATES or self.consumed[sku_id] >= sku.enabled:
                return _bad(f"Subscription with SKU {sku_id} does not have any available licenses.")

        # Validation passed: commit seats and the user's licenses together.
        now = utc_now_iso()
        for sku_id in remove:
            if sku_id not in result:
                self.consumed[sku_id] -= 1
                user.license_updated.pop(sku_id, None)
        for sku_id in newly:
            self.consumed[sku_id] += 1
        for sku_id, _ in add:
            user.license_updated[sku_id] = now
        user.licenses = result
        return None
