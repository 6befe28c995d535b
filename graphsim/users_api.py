"""Graph's user routes: read, list, update, assignLicense, licenseDetails and reprocessLicenseAssignment."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from graphsim.fixture import ISO_COUNTRIES
from graphsim.lifecycle import SIGN_IN_FIELDS, iso, parse_time
from graphsim.permissions import ASSIGN_LICENSES, READ_SIGN_INS, READ_USERS, WRITE_LIFECYCLE, WRITE_USERS
from graphsim.query import FilterSpec, compile_filter, next_link, parse_select
from graphsim.routes import TenantRoutes
from graphsim.tenant import User
from graphsim.wire import (
    BAD_JSON,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    NO_BODY,
    Call,
    Reply,
    bad_json,
    bad_request,
    decode_skiptoken,
    denied,
    error_reply,
    not_found,
)

DEFAULT_USER_PROPERTIES = ("businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
                           "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id")
# The properties /beta returns on the user object assignLicense answers with.
ALL_USER_PROPERTIES = ("id", "userPrincipalName", "displayName", "givenName", "surname", "jobTitle", "mail",
                       "mailNickname", "businessPhones", "mobilePhone", "officeLocation", "preferredLanguage",
                       "usageLocation", "accountEnabled", "userType", "assignedLicenses", "licenseAssignmentStates")
# Returned only on $select, like assignedLicenses.
LIFECYCLE_PROPERTIES = ("createdDateTime", "employeeHireDate", "employeeLeaveDateTime", "signInActivity")
WRITABLE_USER_PROPERTIES = frozenset({"usageLocation", "displayName", "givenName", "surname", "jobTitle",
                                      "accountEnabled", "employeeHireDate", "employeeLeaveDateTime"})
# With signInActivity selected or filtered on, a page holds at most this many users (user-list docs).
MAX_SIGN_IN_PAGE_SIZE = 120

_VALUES: dict[str, Callable[[User], Any]] = {
    "id": lambda u: u.id,
    "userPrincipalName": lambda u: u.upn,
    "displayName": lambda u: u.display_name,
    "givenName": lambda u: u.given_name,
    "surname": lambda u: u.surname,
    "jobTitle": lambda u: u.job_title,
    "mail": lambda u: u.upn,
    "mailNickname": lambda u: u.upn.split("@")[0],
    "businessPhones": lambda _: [],
    "mobilePhone": lambda _: None,
    "officeLocation": lambda _: None,
    "preferredLanguage": lambda _: None,
    "usageLocation": lambda u: u.usage_location,
    "accountEnabled": lambda u: u.account_enabled,
    "userType": lambda _: "Member",
    "assignedLicenses": lambda u: u.assigned_licenses(),
    "licenseAssignmentStates": lambda u: u.license_states(),
    "createdDateTime": lambda u: iso(u.created),
    "employeeHireDate": lambda u: iso(u.hire),
    "employeeLeaveDateTime": lambda u: iso(u.leave),
    "signInActivity": lambda u: u.sign_in_json(),
}
USER_PROPERTY_NAMES = {name.lower(): name for name in (*ALL_USER_PROPERTIES, *LIFECYCLE_PROPERTIES)}
_DATES: dict[str, Callable[[User], float | None]] = {
    "createdDateTime": lambda u: u.created, "employeeHireDate": lambda u: u.hire,
    "employeeLeaveDateTime": lambda u: u.leave,
}


def user_json(user: User, select: tuple[str, ...] | None) -> dict[str, Any]:
    """A user as Graph returns it: the default property set, or exactly the $select-ed ones."""
    return {name: _VALUES[name](user) for name in (select if select is not None else DEFAULT_USER_PROPERTIES)}


def _filter_value(user: User, prop: str) -> Any:
    date = _DATES.get(prop)
    return date(user) if date is not None else _VALUES[prop](user)


def _sign_in_value(user: User, field: str) -> float | None:
    return None if user.sign_in is None else user.sign_in.moment(field)


USER_FILTER = FilterSpec(
    names=USER_PROPERTY_NAMES,
    equality=frozenset({"id", "userPrincipalName", "displayName", "usageLocation", "accountEnabled", "mail"}),
    dates=frozenset(_DATES),
    value=_filter_value,
    skus=lambda user: user.effective_licenses(),
    sign_in=_sign_in_value,
    sign_in_fields=frozenset(SIGN_IN_FIELDS),
)


def _is_guid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


LicenseChanges = tuple[list[tuple[str, tuple[str, ...]]], list[str]]


def parse_license_changes(call: Call, endpoint: str, resource: str, *, user: str | None = None,
                          group: str | None = None) -> LicenseChanges | Reply:
    """An assignLicense body as (additions, removals), or the 400 Graph answers a bad one with."""
    body = call.body
    if body is BAD_JSON or (body is not NO_BODY and not isinstance(body, dict)):
        return bad_json(call, endpoint, user=user, group=group)
    body = body if isinstance(body, dict) else {}
    missing = [name for name in ("addLicenses", "removeLicenses") if body.get(name) is None]
    if missing:
        return bad_request(call, "One or more parameters of the operation 'assignLicense' are missing from the "
                           f"request payload. The missing parameters are: {','.join(missing)}.", endpoint,
                           user=user, group=group)
    add_raw, remove_raw = body["addLicenses"], body["removeLicenses"]
    if not isinstance(add_raw, list) or not isinstance(remove_raw, list):
        return bad_json(call, endpoint, user=user, group=group)
    if not add_raw and not remove_raw:
        return bad_request(call, "No license changes provided. At least one license to add or remove must be "
                           "specified.", endpoint, user=user, group=group)
    add: list[tuple[str, tuple[str, ...]]] = []
    for item in add_raw:
        if not isinstance(item, dict) or not _is_guid(item.get("skuId")):
            return bad_request(call, "Invalid value specified for property 'skuId' of resource 'AssignedLicense'.",
                               endpoint, user=user, group=group)
        disabled = item.get("disabledPlans") or []
        if not isinstance(disabled, list) or not all(_is_guid(p) for p in disabled):
            return bad_request(call, "Invalid value specified for property 'disabledPlans' of resource "
                               "'AssignedLicense'.", endpoint, user=user, group=group)
        add.append((str(item["skuId"]).lower(), tuple(dict.fromkeys(str(p).lower() for p in disabled))))
    if not all(_is_guid(s) for s in remove_raw):
        return bad_request(call, f"Invalid value specified for property 'removeLicenses' of resource '{resource}'.",
                           endpoint, user=user, group=group)
    return add, list(dict.fromkeys(str(s).lower() for s in remove_raw))


class UsersApi(TenantRoutes):
    """The user routes."""

    def _user(self, key: str) -> User | None:
        """A user as Graph sees it now (users not yet replicated are absent)."""
        return self.tenant.visible_user(key, self._config().clock())

    def _allowed_user(self, call: Call, key: str, endpoint: str, roles: frozenset[str]) -> User | Reply:
        """The user a call names, or its 403 (no role among `roles`) or 404."""
        if not call.app.roles & roles:
            return denied(call, endpoint, user=key)
        user = self._user(key)
        return not_found(call, key, endpoint, user=key) if user is None else user

    def _select(self, call: Call, endpoint: str) -> tuple[str, ...] | None | Reply:
        select = parse_select(call.query.get("$select"), USER_PROPERTY_NAMES)
        if isinstance(select, str):
            return bad_request(call, f"Could not find a property named '{select}' on type "
                               "'Microsoft.DirectoryServices.User'.", endpoint)
        return select

    # -- reads -----------------------------------------------------------------------------------------

    def get(self, call: Call, key: str) -> Reply:
        """GET /users/{id|upn}."""
        endpoint = "users.get"
        if not call.app.roles & READ_USERS:
            return denied(call, endpoint, user=key)
        select = self._select(call, endpoint)
        if isinstance(select, Reply):
            return select
        if select and "signInActivity" in select:
            refusal = sign_in_refusal(call, endpoint, self._config().premium, user=key)
            if refusal is not None:
                return refusal
        user = self._user(key)
        if user is None:
            return not_found(call, key, endpoint, user=key)
        shape = f"users({','.join(select)})" if select else "users"
        body = {"@odata.context": f"{self.base_url}/{call.version}/$metadata#{shape}/$entity",
                **user_json(user, select)}
        return Reply(200, body, endpoint=endpoint, user=key)

    def license_details(self, call: Call, key: str) -> Reply:
        """GET /users/{id}/licenseDetails: direct and inherited licenses, one per SKU."""
        endpoint = "licenseDetails"
        user = self._allowed_user(call, key, endpoint, READ_USERS)
        if isinstance(user, Reply):
            return user
        value = []
        for sku_id, disabled in user.effective_licenses().items():
            sku = self.tenant.skus[sku_id]
            value.append({"id": f"{sku_id}_{user.id}", "skuId": sku_id, "skuPartNumber": sku.part_number,
                          "servicePlans": [{"servicePlanId": p.plan_id, "servicePlanName": p.name,
                                            "provisioningStatus": "Disabled" if p.plan_id in disabled
                                            else "Success", "appliesTo": p.applies_to} for p in sku.plans]})
        context = f"{self.base_url}/{call.version}/$metadata#users('{user.id}')/licenseDetails"
        return Reply(200, {"@odata.context": context, "value": value}, endpoint=endpoint, user=key)

    def list_users(self, call: Call) -> Reply:
        """GET /users: paged, $select, a $filter subset; signInActivity pages hold at most 120 users."""
        endpoint = "users.list"
        if not call.app.roles & READ_USERS:
            return denied(call, endpoint)
        select = self._select(call, endpoint)
        if isinstance(select, Reply):
            return select
        filter_text = call.query["$filter"][0] if call.query.get("$filter") else None
        compiled = compile_filter(filter_text, USER_FILTER) if filter_text is not None else None
        if filter_text is not None and compiled is None:
            return error_reply(call, 400, "Request_UnsupportedQuery", "Unsupported Query.", endpoint)
        sign_in = bool(select and "signInActivity" in select) or bool(compiled and compiled.uses_sign_in)
        if sign_in:
            refusal = sign_in_refusal(call, endpoint, self._config().premium)
            if refusal is not None:
                return refusal
        size = page_size(call, endpoint, MAX_SIGN_IN_PAGE_SIZE if sign_in else None)
        if isinstance(size, Reply):
            return size
        top, offset = size
        users = self.tenant.visible_users(self._config().clock())
        if compiled is not None:
            users = [u for u in users if compiled.predicate(u)]
        shape = f"users({','.join(select)})" if select else "users"
        body: dict[str, Any] = {"@odata.context": f"{self.base_url}/{call.version}/$metadata#{shape}"}
        if offset + top < len(users):
            body["@odata.nextLink"] = next_link(f"{self.base_url}/{call.version}/users", top, offset + top, select,
                                                filter_text)
        body["value"] = [user_json(u, select) for u in users[offset:offset + top]]
        return Reply(200, body, endpoint=endpoint)

    # -- writes ----------------------------------------------------------------------------------------

    def patch(self, call: Call, key: str) -> Reply:
        """PATCH /users/{id|upn}: 204, all or nothing."""
        endpoint = "users.patch"
        if not call.app.roles & WRITE_USERS:
            return denied(call, endpoint, user=key)
        if call.body is BAD_JSON or not isinstance(call.body, dict):
            return bad_json(call, endpoint, user=key)
        user = self._user(key)
        if user is None:
            return not_found(call, key, endpoint, user=key)
        updates: dict[str, Any] = {}
        for name, value in call.body.items():
            canonical = USER_PROPERTY_NAMES.get(name.lower())
            if canonical is None:
                return bad_request(call, f"Property '{name}' does not exist as a declared property or extension "
                                   "property.", endpoint, user=key)
            if canonical not in WRITABLE_USER_PROPERTIES:
                return bad_request(call, f"Property '{canonical}' is read-only and cannot be set.", endpoint,
                                   user=key)
            if canonical == "employeeLeaveDateTime" and WRITE_LIFECYCLE not in call.app.roles:
                return denied(call, endpoint, user=key)
            checked = _checked_value(canonical, value)
            if isinstance(checked, _Invalid):
                if checked.bad_json:
                    return bad_json(call, endpoint, user=key)
                return bad_request(call, f"Invalid value specified for property '{canonical}' of resource "
                                   "'User'.", endpoint, user=key)
            updates[canonical] = checked
        for name, value in updates.items():
            _apply(user, name, value, self._config().clock())
        return Reply(204, None, endpoint=endpoint, user=key)

    def assign_license(self, call: Call, key: str) -> Reply:
        """POST /users/{id|upn}/assignLicense: direct assignments, checked at once."""
        endpoint = "assignLicense"
        if not call.app.roles & ASSIGN_LICENSES:
            return denied(call, endpoint, user=key)
        changes = parse_license_changes(call, endpoint, "User", user=key)
        if isinstance(changes, Reply):
            return changes
        add, remove = changes
        now = self._config().clock()
        user = self.tenant.visible_user(key, now)
        if user is None:
            return not_found(call, key, endpoint, user=key)
        seen_location = user.usage_location_seen(now, self._config().replication_lag_s)
        failure = self.tenant.assign_license(user, add, remove, seen_location)
        if failure is not None:
            return error_reply(call, failure.status, failure.code, failure.message, endpoint, user=key)
        return self._updated_user(call, user, endpoint, key)

    def reprocess(self, call: Call, key: str) -> Reply:
        """POST /users/{id}/reprocessLicenseAssignment: queue the user in each of its licensing groups."""
        endpoint = "reprocessLicenseAssignment"
        user = self._allowed_user(call, key, endpoint, ASSIGN_LICENSES)
        if isinstance(user, Reply):
            return user
        self.licensing.reprocess_user(user)
        return self._updated_user(call, user, endpoint, key)

    def _updated_user(self, call: Call, user: User, endpoint: str, key: str) -> Reply:
        # v1.0 answers with the default property set; /beta with the whole updated user, licenses included.
        shape = None if call.version == "v1.0" else ALL_USER_PROPERTIES
        body_out = {"@odata.context": f"{self.base_url}/{call.version}/$metadata#users/$entity",
                    **user_json(user, shape)}
        return Reply(200, body_out, endpoint=endpoint, user=key)


def sign_in_refusal(call: Call, endpoint: str, premium: bool, *, user: str | None = None) -> Reply | None:
    """The 403 a signInActivity read gets without AuditLog.Read.All or without Entra ID P1/P2."""
    if READ_SIGN_INS not in call.app.roles:
        return error_reply(call, 403, "Authentication_MSGraphPermissionMissing", "Calling principal does not "
                           f"have required MSGraph permissions {READ_SIGN_INS}", endpoint, user=user)
    if not premium:
        return error_reply(call, 403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                           "Neither tenant is B2C or tenant doesn't have premium license", endpoint, user=user)
    return None


def page_size(call: Call, endpoint: str, sign_in_max: int | None) -> tuple[int, int] | Reply:
    """($top, offset) of a list request, or its 400 ($top above `sign_in_max` when signInActivity is read)."""
    top_raw = (call.query.get("$top") or [str(DEFAULT_PAGE_SIZE)])[0]
    try:
        top = int(top_raw)
    except ValueError:
        top = -1
    if not 1 <= top <= MAX_PAGE_SIZE:
        return bad_request(call, f"Invalid page size specified: '{top_raw}'. Must be between 1 and "
                           f"{MAX_PAGE_SIZE} inclusive.", endpoint)
    if sign_in_max is not None and top > sign_in_max:
        return bad_request(call, f"Cannot query data for more than {sign_in_max} users at a time.", endpoint)
    token = call.query["$skiptoken"][0] if call.query.get("$skiptoken") else None
    try:
        return top, decode_skiptoken(token) if token is not None else 0
    except ValueError:
        return error_reply(call, 400, "Directory_ExpiredPageToken", "The specified page token value has expired "
                           "and can no longer be included in your request.", endpoint)


class _Invalid:
    """A PATCH value Graph refuses: as unreadable JSON (a wrong type) or as an invalid value."""

    def __init__(self, *, bad_json: bool = False) -> None:
        self.bad_json = bad_json


def _checked_value(name: str, value: Any) -> Any:
    """The value to store for a PATCHed property (epoch seconds for dates), or _Invalid."""
    if name == "usageLocation":
        return value if value is None or (isinstance(value, str) and value in ISO_COUNTRIES) else _Invalid()
    if name == "accountEnabled":
        return value if isinstance(value, bool) else _Invalid(bad_json=True)
    if name in ("employeeHireDate", "employeeLeaveDateTime"):
        if value is None:
            return None
        try:
            return parse_time(value) if isinstance(value, str) else _Invalid()
        except ValueError:
            return _Invalid()
    return value if isinstance(value, str) and value else _Invalid()


_ATTRIBUTES = {"displayName": "display_name", "givenName": "given_name", "surname": "surname",
               "jobTitle": "job_title", "accountEnabled": "account_enabled", "employeeHireDate": "hire",
               "employeeLeaveDateTime": "leave"}


def _apply(user: User, name: str, value: Any, now: float) -> None:
    if name == "usageLocation":
        user.set_usage_location(value, now)
    else:
        setattr(user, _ATTRIBUTES[name], value)
