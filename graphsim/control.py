"""The control surface's directory endpoints: users' lifecycle, effective licenses, and groups for test set-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from graphsim.fixture import SkuDef
from graphsim.groups import Group, MemberKind
from graphsim.licensing import GroupLicensing
from graphsim.lifecycle import DAY_S, SIGN_IN_FIELDS, SignInActivity, parse_time
from graphsim.tenant import Tenant, User, nickname

_LIFECYCLE_KEYS = frozenset({"accountEnabled", "createdDateTime", "createdDaysAgo", "employeeHireDate",
                             "employeeLeaveDateTime", "signInActivity", "signedInDaysAgo"})


def _time(value: Any, name: str, *, nullable: bool = True) -> float | None:
    """Epoch seconds of an ISO 8601 value (None for null when allowed); ValueError naming `name`."""
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO 8601 date-time{' or null' if nullable else ''}")
    try:
        return parse_time(value)
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 date-time, not {value!r}") from None


def _days_ago(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number of days >= 0")
    return time.time() - float(value) * DAY_S


def _sign_in(current: SignInActivity | None, value: Any) -> SignInActivity | None:
    """signInActivity after a partial update: null clears it, absent fields keep their value."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(SIGN_IN_FIELDS):
        raise ValueError(f"signInActivity must be null or an object with {', '.join(SIGN_IN_FIELDS)}")
    old = current or SignInActivity(None, None, None)
    moments = {name: _time(value[name], f"signInActivity.{name}") if name in value else old.moment(name)
               for name in SIGN_IN_FIELDS}
    return SignInActivity(moments["lastSignInDateTime"], moments["lastSuccessfulSignInDateTime"],
                          moments["lastNonInteractiveSignInDateTime"])


class DirectoryControl:
    """`/_sim/users/{id}` lifecycle, `/_sim/licenses` and `/_sim/groups`: read and set state with no throttling."""

    def __init__(self, tenant: Tenant, licensing: GroupLicensing) -> None:
        self.tenant = tenant
        self.licensing = licensing

    def reply(self, method: str, parts: list[str], body: Callable[[], dict[str, Any]]) -> tuple[int, Any] | None:
        """Status and JSON of a request this class serves, None for any other; ValueError means 400."""
        if parts == ["licenses"] and method == "GET":
            return 200, {"value": [self.licenses_view(u) for u in self.tenant.user_order]}
        if len(parts) >= 2 and parts[0] == "users":
            return self._user_reply(method, parts, body)
        if parts == ["groups"] and method == "GET":
            return 200, {"value": [self.group_view(g, members=False) for g in self.tenant.group_order]}
        if parts == ["groups"] and method == "POST":
            return 201, self.group_view(self._create_group(body()))
        if len(parts) >= 2 and parts[0] == "groups":
            return self._group_reply(method, parts, body)
        return None

    def _user_reply(self, method: str, parts: list[str], body: Callable[[], dict[str, Any]]) -> tuple[int, Any] | None:
        user = self.tenant.find_user(parts[1])
        if len(parts) == 2 and method == "GET":
            return (200, self.user_view(user)) if user else (404, {"error": f"no user {parts[1]!r}"})
        if len(parts) == 2 and method == "PATCH":
            if user is None:
                return 404, {"error": f"no user {parts[1]!r}"}
            self._patch_user(user, body())
            return 200, self.user_view(user)
        if parts[2:] == ["licenses"] and method == "GET":
            return (200, self.licenses_view(user)) if user else (404, {"error": f"no user {parts[1]!r}"})
        return None

    def _group_reply(self, method: str, parts: list[str],
                     body: Callable[[], dict[str, Any]]) -> tuple[int, Any] | None:
        group = self.tenant.find_group(parts[1])
        if group is None:
            return 404, {"error": f"no group {parts[1]!r}"}
        action = parts[2:]
        if action == [] and method == "GET":
            return 200, self.group_view(group)
        if action == ["members"] and method == "POST":
            self._change_members(group, body())
        elif action == ["licenses"] and method == "POST":
            self._change_licenses(group, body())
        elif action == ["reprocess"] and method == "POST":
            self.licensing.process_now(group, group.user_members())
        else:
            return None
        return 200, self.group_view(group)

    # -- views -----------------------------------------------------------------------------------------

    def user_view(self, user: User) -> dict[str, Any]:
        """A user with its lifecycle attributes, every license assignment state and its groups."""
        return {**user.summary(), **user.lifecycle(), "licenseAssignmentStates": user.license_states(),
                "memberOf": sorted(user.member_of)}

    def licenses_view(self, user: User) -> dict[str, Any]:
        """What a user holds and how: per SKU, whether directly and through which groups; and group errors."""
        licenses = []
        for sku_id, disabled in user.effective_licenses().items():
            groups = [gid for gid, per in user.inherited.items() if sku_id in per and per[sku_id].holds]
            licenses.append({"skuId": sku_id, "skuPartNumber": self._part(sku_id), "disabledPlans": list(disabled),
                             "direct": sku_id in user.licenses, "groups": groups})
        errors = [{"skuId": sku_id, "skuPartNumber": self._part(sku_id), "group": gid, "state": lic.state.value,
                   "error": lic.error.value}
                  for gid, per in user.inherited.items() for sku_id, lic in per.items() if lic.error.value != "None"]
        return {"id": user.id, "userPrincipalName": user.upn, "licenses": licenses, "groupErrors": errors}

    def group_view(self, group: Group, *, members: bool = True) -> dict[str, Any]:
        """A group: licenses, processing state, member count (and members), members in error, last run."""
        run = self.licensing.last_runs.get(group.id)
        view: dict[str, Any] = {
            "id": group.id, "displayName": group.display_name,
            "assignedLicenses": [{"skuId": s, "skuPartNumber": self._part(s), "disabledPlans": list(d)}
                                 for s, d in group.licenses.items()],
            "licenseProcessingState": self.licensing.state(group).value,
            "memberCount": len(group.members), "membersWithLicenseErrors": len(group.error_members),
            "lastProcessing": None if run is None else run.json(),
        }
        if members:
            view["members"] = list(group.members)
        return view

    def _part(self, sku_id: str) -> str | None:
        sku = self.tenant.skus.get(sku_id)
        return None if sku is None else sku.part_number

    # -- changes ---------------------------------------------------------------------------------------

    def _patch_user(self, user: User, body: dict[str, Any]) -> None:
        """Set lifecycle and sign-in attributes, all or nothing."""
        unknown = set(body) - _LIFECYCLE_KEYS
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; allowed: {sorted(_LIFECYCLE_KEYS)}")
        enabled = body.get("accountEnabled", user.account_enabled)
        if not isinstance(enabled, bool):
            raise ValueError("accountEnabled must be true or false")
        created = user.created
        if "createdDateTime" in body:
            stated = _time(body["createdDateTime"], "createdDateTime", nullable=False)
            created = created if stated is None else stated
        if "createdDaysAgo" in body:
            created = _days_ago(body["createdDaysAgo"], "createdDaysAgo")
        hire = _time(body["employeeHireDate"], "employeeHireDate") if "employeeHireDate" in body else user.hire
        leave = (_time(body["employeeLeaveDateTime"], "employeeLeaveDateTime") if "employeeLeaveDateTime" in body
                 else user.leave)
        sign_in = _sign_in(user.sign_in, body["signInActivity"]) if "signInActivity" in body else user.sign_in
        if "signedInDaysAgo" in body:
            when = _days_ago(body["signedInDaysAgo"], "signedInDaysAgo")
            sign_in = SignInActivity(when, when, when)
        user.account_enabled, user.created, user.hire, user.leave, user.sign_in = enabled, created, hire, leave, sign_in

    def _create_group(self, body: dict[str, Any]) -> Group:
        """A licensed group with members, processed at once (no queue, no throttling, no write log)."""
        unknown = set(body) - {"displayName", "members", "licenses", "description"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        name = body.get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("displayName must be a non-empty string")
        licenses = self._licenses(body.get("licenses", []))
        members = self._members(body.get("members", []))
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise ValueError("description must be a string or null")
        group = self.tenant.add_group(name, nickname(name), description)
        group.licenses = dict(licenses)
        self.tenant.add_members(group, [(m, MemberKind.USER) for m in members])
        self.licensing.process_now(group, members)
        return group

    def _change_members(self, group: Group, body: dict[str, Any]) -> None:
        """{"add": [...], "remove": [...], "queue": false}: processed at once unless queued like Graph."""
        unknown = set(body) - {"add", "remove", "queue"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        add = [m for m in self._members(body.get("add", [])) if m not in group.members]
        remove = [m for m in self._members(body.get("remove", [])) if m in group.members]
        self.tenant.add_members(group, [(m, MemberKind.USER) for m in add])
        for member in remove:
            self.tenant.remove_member(group, member)
        self._process(group, [*add, *remove], body.get("queue", False))

    def _change_licenses(self, group: Group, body: dict[str, Any]) -> None:
        """{"add": [{"sku", "disabledPlans"}], "remove": [sku...], "queue": false}."""
        unknown = set(body) - {"add", "remove", "queue"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        add = self._licenses(body.get("add", []))
        remove = [self._sku(s).sku_id for s in _strings(body.get("remove", []), "remove")]
        licenses = {s: p for s, p in group.licenses.items() if s not in remove}
        licenses.update(add)
        group.licenses = licenses
        self._process(group, group.user_members(), body.get("queue", False))

    def _process(self, group: Group, users: list[str], queue: Any) -> None:
        if not isinstance(queue, bool):
            raise ValueError("queue must be true or false")
        if queue:
            self.licensing.enqueue(group, users)
        else:
            self.licensing.process_now(group, users)

    def _members(self, raw: Any) -> list[str]:
        members = []
        for key in _strings(raw, "members"):
            user = self.tenant.find_user(key)
            if user is None:
                raise ValueError(f"no user {key!r}")
            members.append(user.id)
        return list(dict.fromkeys(members))

    def _sku(self, key: str) -> SkuDef:
        try:
            return self.tenant.skus.get(key.lower()) or self.tenant.sku_by_part(key)
        except KeyError:
            raise ValueError(f"no sku {key!r}") from None

    def _licenses(self, raw: Any) -> list[tuple[str, tuple[str, ...]]]:
        """[{"sku": skuId or part number, "disabledPlans": [plan id or name]}] as (skuId, plan ids)."""
        if not isinstance(raw, list):
            raise ValueError("licenses must be a list")
        licenses = []
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("sku"), str):
                raise ValueError('each license is {"sku": skuId or part number, "disabledPlans": [...]}')
            sku = self._sku(item["sku"])
            by_name = {p.name.lower(): p.plan_id for p in sku.plans} | {p.plan_id: p.plan_id for p in sku.plans}
            plans = []
            for plan in _strings(item.get("disabledPlans", []), "disabledPlans"):
                if plan.lower() not in by_name:
                    raise ValueError(f"{sku.part_number} has no service plan {plan!r}")
                plans.append(by_name[plan.lower()])
            licenses.append((sku.sku_id, tuple(dict.fromkeys(plans))))
        return licenses


def _strings(raw: Any, name: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ValueError(f"{name} must be a list of strings")
    return raw

