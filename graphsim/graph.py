"""Microsoft Graph endpoints: users, subscribedSkus, assignLicense and $batch, with throttling."""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, unquote

from graphsim.config import SimConfig
from graphsim.fixture import ISO_COUNTRIES
from graphsim.stats import Stats
from graphsim.tenant import Tenant, User
from graphsim.throttle import (
    REPORT_ABOVE_FRACTION,
    WRITE_LIMIT_EXCEEDED,
    Throttler,
    ThrottleResult,
    format_retry_after,
    resource_units,
)
from graphsim.tokens import AppToken

GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
MAX_BATCH_ITEMS = 20
MAX_PAGE_SIZE = 999
DEFAULT_PAGE_SIZE = 100

# Application roles that allow each kind of call (Graph permission reference pages).
READ_USERS = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All",
                        "User.ReadBasic.All"})
WRITE_USERS = frozenset({"User.ReadWrite.All", "Directory.ReadWrite.All"})
ASSIGN_LICENSES = frozenset({"LicenseAssignment.ReadWrite.All", "User.ReadWrite.All", "Directory.ReadWrite.All"})
READ_SKUS = frozenset({"LicenseAssignment.Read.All", "LicenseAssignment.ReadWrite.All", "Organization.Read.All",
                       "Organization.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})

DEFAULT_USER_PROPERTIES = ("businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
                           "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id")
# Every property graphsim models, in the order /beta returns them on the user object assignLicense answers with.
ALL_USER_PROPERTIES = ("id", "userPrincipalName", "displayName", "givenName", "surname", "jobTitle", "mail",
                       "mailNickname", "businessPhones", "mobilePhone", "officeLocation", "preferredLanguage",
                       "usageLocation", "accountEnabled", "userType", "assignedLicenses", "licenseAssignmentStates")
WRITABLE_USER_PROPERTIES = frozenset({"usageLocation", "displayName", "givenName", "surname", "jobTitle",
                                      "accountEnabled"})


class _Absent:
    """Marker for a request without a body."""


class _Unparseable:
    """Marker for a body that is not valid JSON."""


NO_BODY = _Absent()
BAD_JSON = _Unparseable()


@dataclass(frozen=True)
class Reply:
    """One Graph response before serialisation: status, headers and a JSON-ready body."""

    status: int
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    endpoint: str = "other"
    # The user segment of the path, for the write log.
    user: str | None = None


@dataclass(frozen=True)
class Call:
    """One Graph request (direct or a $batch item) after authentication."""

    method: str
    version: str
    path: str
    query: dict[str, list[str]]
    body: Any
    app: AppToken
    request_id: str
    client_request_id: str


def inner_date() -> str:
    """innerError.date as Graph writes it (UTC, no offset)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def error_body(code: str, message: str, request_id: str, client_request_id: str,
               inner: dict[str, str] | None = None) -> dict[str, Any]:
    """Graph's error envelope: {"error": {code, message, innerError: {date, request-id, ...}}}."""
    return {"error": {"code": code, "message": message,
                      "innerError": {**(inner or {}), "date": inner_date(), "request-id": request_id,
                                     "client-request-id": client_request_id}}}


def parse_json_body(raw: bytes) -> Any:
    """The parsed body, NO_BODY when empty, BAD_JSON when it does not parse."""
    if not raw.strip():
        return NO_BODY
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return BAD_JSON


def user_json(user: User, select: tuple[str, ...] | None) -> dict[str, Any]:
    """A user as Graph returns it: the default property set, or exactly the $select-ed ones."""
    values: dict[str, Callable[[], Any]] = {
        "id": lambda: user.id,
        "userPrincipalName": lambda: user.upn,
        "displayName": lambda: user.display_name,
        "givenName": lambda: user.given_name,
        "surname": lambda: user.surname,
        "jobTitle": lambda: user.job_title,
        "mail": lambda: user.upn,
        "mailNickname": lambda: user.upn.split("@")[0],
        "businessPhones": lambda: [],
        "mobilePhone": lambda: None,
        "officeLocation": lambda: None,
        "preferredLanguage": lambda: None,
        "usageLocation": lambda: user.usage_location,
        "accountEnabled": lambda: user.account_enabled,
        "userType": lambda: "Member",
        "assignedLicenses": user.assigned_licenses,
        "licenseAssignmentStates": user.license_states,
    }
    names = select if select is not None else DEFAULT_USER_PROPERTIES
    return {name: values[name]() for name in names}


_USER_PROPERTY_NAMES = {name.lower(): name for name in ALL_USER_PROPERTIES}

_FILTER_TERM = re.compile(
    r"""^\s*(?:
        (?P<prop>\w+)\s+eq\s+(?:'(?P<value>(?:[^']|'')*)'|(?P<bare>true|false|null))
      | (?P<inprop>\w+)\s+in\s+\((?P<list>[^)]*)\)
      | startswith\(\s*(?P<swprop>\w+)\s*,\s*'(?P<prefix>(?:[^']|'')*)'\s*\)
      | assignedLicenses/any\(\s*(?P<var>\w+)\s*:\s*(?P=var)/skuId\s+eq\s+(?P<sku>[0-9a-fA-F-]{36})\s*\)
    )\s*$""",
    re.VERBOSE,
)
_FILTERABLE = frozenset({"id", "userPrincipalName", "displayName", "usageLocation", "accountEnabled", "mail"})


def _user_value(user: User, prop: str) -> Any:
    return user_json(user, (prop,))[prop]


def compile_filter(text: str) -> Callable[[User], bool] | None:
    """A predicate for the small `$filter` subset graphsim supports, or None when unsupported."""
    predicates: list[Callable[[User], bool]] = []
    for term in re.split(r"\s+and\s+", text.strip()):
        m = _FILTER_TERM.match(term)
        if m is None:
            return None
        if m["prop"]:
            prop = _USER_PROPERTY_NAMES.get(m["prop"].lower())
            if prop not in _FILTERABLE:
                return None
            if m["value"] is not None:
                wanted: Any = m["value"].replace("''", "'").lower()
            else:
                wanted = {"true": True, "false": False, "null": None}[m["bare"]]

            def eq(user: User, prop: str = prop, wanted: Any = wanted) -> bool:
                value = _user_value(user, prop)
                return bool((value.lower() if isinstance(value, str) else value) == wanted)

            predicates.append(eq)
        elif m["inprop"]:
            prop = _USER_PROPERTY_NAMES.get(m["inprop"].lower())
            if prop not in _FILTERABLE:
                return None
            values = {v.strip().strip("'").replace("''", "'").lower() for v in m["list"].split(",")}

            def isin(user: User, prop: str = prop, values: set[str] = values) -> bool:
                value = _user_value(user, prop)
                return isinstance(value, str) and value.lower() in values

            predicates.append(isin)
        elif m["swprop"]:
            prop = _USER_PROPERTY_NAMES.get(m["swprop"].lower())
            if prop not in _FILTERABLE:
                return None
            prefix = m["prefix"].replace("''", "'").lower()

            def startswith(user: User, prop: str = prop, prefix: str = prefix) -> bool:
                value = _user_value(user, prop)
                return isinstance(value, str) and value.lower().startswith(prefix)

            predicates.append(startswith)
        else:
            sku = m["sku"].lower()

            def has_sku(user: User, sku: str = sku) -> bool:
                return sku in user.licenses

            predicates.append(has_sku)
    return lambda user: all(p(user) for p in predicates)


def _is_guid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _usage_headers(units: int, used_fraction: float) -> tuple[tuple[str, str], ...]:
    """x-ms-resource-unit, and x-ms-throttle-limit-percentage once a limit is more than 80 % used."""
    if used_fraction > REPORT_ABOVE_FRACTION:
        return (("x-ms-resource-unit", str(units)), ("x-ms-throttle-limit-percentage", f"{used_fraction:.2f}"))
    return (("x-ms-resource-unit", str(units)),)


class GraphService:
    """Executes Graph calls against one tenant; synchronous, so each call is atomic on the event loop."""

    def __init__(self, tenant: Tenant, throttler: Throttler, stats: Stats, config: SimConfig,
                 base_url: str, shuffle_rng: random.Random) -> None:
        self.tenant = tenant
        self.throttler = throttler
        self.stats = stats
        self.config = config
        self.base_url = base_url
        self._shuffle_rng = shuffle_rng

    # -- helpers -------------------------------------------------------------------------------------

    def _error(self, call: Call, status: int, code: str, message: str, endpoint: str,
               headers: tuple[tuple[str, str], ...] = (), user: str | None = None) -> Reply:
        return Reply(status, error_body(code, message, call.request_id, call.client_request_id),
                     headers, endpoint, user)

    def _denied(self, call: Call, endpoint: str, user: str | None = None) -> Reply:
        return self._error(call, 403, "Authorization_RequestDenied",
                           "Insufficient privileges to complete the operation.", endpoint, user=user)

    def _not_found(self, call: Call, key: str, endpoint: str) -> Reply:
        return self._error(call, 404, "Request_ResourceNotFound",
                           f"Resource '{key}' does not exist or one of its queried reference-property "
                           "objects are not present.", endpoint, user=key)

    def _user(self, key: str) -> User | None:
        """A user as Graph sees it now (users not yet replicated are absent)."""
        return self.tenant.visible_user(key, self.config.clock())

    def _bad_json(self, call: Call, endpoint: str, user: str | None) -> Reply:
        return self._error(call, 400, "BadRequest", "Unable to read JSON request payload. Please ensure "
                           "Content-Type header is set and payload is of valid JSON format.", endpoint, user=user)

    def _select(self, call: Call, endpoint: str) -> tuple[str, ...] | None | Reply:
        raw = call.query.get("$select")
        if not raw:
            return None
        names: list[str] = []
        for part in ",".join(raw).split(","):
            part = part.strip()
            if not part:
                continue
            name = _USER_PROPERTY_NAMES.get(part.lower())
            if name is None:
                return self._error(call, 400, "Request_BadRequest", f"Could not find a property named "
                                   f"'{part}' on type 'Microsoft.DirectoryServices.User'.", endpoint)
            if name not in names:
                names.append(name)
        return tuple(names)

    # -- dispatch ------------------------------------------------------------------------------------

    @staticmethod
    def endpoint_of(method: str, segments: list[str]) -> str:
        """The stats name of a route."""
        if segments == ["subscribedSkus"] or (len(segments) == 2 and segments[0] == "subscribedSkus"):
            return "subscribedSkus"
        if segments and segments[0] == "users":
            if len(segments) == 1:
                return "users.list"
            if len(segments) == 2:
                return "users.patch" if method == "PATCH" else "users.get"
            if len(segments) == 3 and segments[2] in ("assignLicense", "licenseDetails"):
                return segments[2]
        if segments == ["$batch"]:
            return "$batch"
        return "other"

    def execute(self, call: Call) -> Reply:
        """Run one call (never a $batch) and return its reply."""
        segments = [unquote(s) for s in call.path.strip("/").split("/") if s]
        endpoint = self.endpoint_of(call.method, segments)
        user_key = segments[1] if len(segments) >= 2 and segments[0] == "users" else None
        units = resource_units(call.method, segments, call.query)
        if call.method in WRITE_METHODS and endpoint in ("assignLicense", "users.patch"):
            return self._write(call, segments, endpoint, user_key, units)
        result = self.throttler.charge(call.app.app_id, units, writes=0)
        if result.throttled:
            self.stats.refuse(units, read=True)
            return self._throttled(call, endpoint, user_key, result, units)
        if call.method == "GET":
            self.stats.accept_read(endpoint, units)
        else:
            self.stats.spend(units)
        reply = self._read(call, segments, endpoint, user_key)
        return replace(reply, headers=reply.headers + _usage_headers(units, result.used_fraction))

    def _read(self, call: Call, segments: list[str], endpoint: str, user_key: str | None) -> Reply:
        if endpoint == "subscribedSkus" and call.method == "GET":
            return self._subscribed_skus(call, segments)
        if endpoint == "users.list" and call.method == "GET":
            return self._list_users(call)
        if endpoint == "users.get" and call.method == "GET":
            return self._get_user(call, segments[1])
        if endpoint == "licenseDetails" and call.method == "GET":
            return self._license_details(call, segments[1])
        if endpoint != "other":
            return self._error(call, 405, "Request_BadRequest",
                               "Specified HTTP method is not allowed for the request target.", endpoint,
                               user=user_key)
        first_unknown = next((s for s in segments if s not in ("users", "subscribedSkus")), segments[0]
                             if segments else "")
        return self._error(call, 400, "BadRequest", f"Resource not found for the segment '{first_unknown}'.",
                           endpoint, user=user_key)

    def _write(self, call: Call, segments: list[str], endpoint: str, user_key: str | None, units: int) -> Reply:
        forced = self.config.force_429
        if forced is not None and forced.count > 0 and self._forced_matches(forced.user, user_key):
            remaining = forced.count - 1
            self.config = replace(self.config, force_429=replace(forced, count=remaining) if remaining else None)
            self.stats.throttled_responses += 1
            scope = f"Tenant_Application/Write/{call.app.app_id}/{self.tenant.tenant_id}"
            return self._throttled(call, endpoint, user_key,
                                   ThrottleResult(forced.retry_after_s, scope, 1.0, WRITE_LIMIT_EXCEEDED), units)
        result = self.throttler.charge(call.app.app_id, units, writes=1)
        if result.throttled:
            self.stats.refuse(units, read=False)
            return self._throttled(call, endpoint, user_key, result, units)
        self.stats.accept_write(units)
        if endpoint == "assignLicense":
            reply = self._assign_license(call, segments[1])
        else:
            reply = self._patch_user(call, segments[1])
        return Reply(reply.status, reply.body, reply.headers + _usage_headers(units, result.used_fraction),
                     endpoint, user_key)

    def _forced_matches(self, wanted: str | None, user_key: str | None) -> bool:
        if wanted is None:
            return True
        if user_key is None:
            return False
        if wanted.lower() == user_key.lower():
            return True
        target = self.tenant.find_user(wanted)
        return target is not None and target is self.tenant.find_user(user_key)

    def _throttled(self, call: Call, endpoint: str, user_key: str | None, result: ThrottleResult,
                   units: int) -> Reply:
        body = error_body("TooManyRequests", "Please retry again later.", call.request_id,
                          call.client_request_id, {"code": "429", "message": "Please retry after", "status": "429"})
        headers = (("Retry-After", format_retry_after(result.retry_after_s or 0.0)),
                   ("x-ms-throttle-scope", result.scope or ""),
                   ("x-ms-throttle-information", result.information or WRITE_LIMIT_EXCEEDED),
                   ("x-ms-throttle-limit-percentage", "1.0"), ("x-ms-resource-unit", str(units)))
        return Reply(429, body, headers, endpoint, user_key)

    # -- reads ---------------------------------------------------------------------------------------

    def _subscribed_skus(self, call: Call, segments: list[str]) -> Reply:
        if not call.app.roles & READ_SKUS:
            return self._denied(call, "subscribedSkus")
        context = f"{self.base_url}/{call.version}/$metadata#subscribedSkus"
        if len(segments) == 2:
            for sku in self.tenant.skus.values():
                if segments[1].lower() in (f"{self.tenant.tenant_id}_{sku.sku_id}", sku.sku_id):
                    return Reply(200, {"@odata.context": f"{context}/$entity", **self.tenant.sku_json(sku)},
                                 endpoint="subscribedSkus")
            return self._error(call, 404, "Request_ResourceNotFound",
                               f"Resource '{segments[1]}' does not exist or one of its queried "
                               "reference-property objects are not present.", "subscribedSkus")
        value = [self.tenant.sku_json(sku) for sku in self.tenant.skus.values()]
        return Reply(200, {"@odata.context": context, "value": value}, endpoint="subscribedSkus")

    def _get_user(self, call: Call, key: str) -> Reply:
        if not call.app.roles & READ_USERS:
            return self._denied(call, "users.get", key)
        select = self._select(call, "users.get")
        if isinstance(select, Reply):
            return select
        user = self._user(key)
        if user is None:
            return self._not_found(call, key, "users.get")
        shape = f"users({','.join(select)})" if select else "users"
        body = {"@odata.context": f"{self.base_url}/{call.version}/$metadata#{shape}/$entity",
                **user_json(user, select)}
        return Reply(200, body, endpoint="users.get", user=key)

    def _license_details(self, call: Call, key: str) -> Reply:
        if not call.app.roles & READ_USERS:
            return self._denied(call, "licenseDetails", key)
        user = self._user(key)
        if user is None:
            return self._not_found(call, key, "licenseDetails")
        value = []
        for sku_id, disabled in user.licenses.items():
            sku = self.tenant.skus[sku_id]
            value.append({"id": f"{sku_id}_{user.id}", "skuId": sku_id, "skuPartNumber": sku.part_number,
                          "servicePlans": [{"servicePlanId": p.plan_id, "servicePlanName": p.name,
                                            "provisioningStatus": "Disabled" if p.plan_id in disabled
                                            else "Success", "appliesTo": p.applies_to} for p in sku.plans]})
        context = f"{self.base_url}/{call.version}/$metadata#users('{user.id}')/licenseDetails"
        return Reply(200, {"@odata.context": context, "value": value}, endpoint="licenseDetails", user=key)

    def _list_users(self, call: Call) -> Reply:
        endpoint = "users.list"
        if not call.app.roles & READ_USERS:
            return self._denied(call, endpoint)
        select = self._select(call, endpoint)
        if isinstance(select, Reply):
            return select
        top_raw = (call.query.get("$top") or [str(DEFAULT_PAGE_SIZE)])[0]
        try:
            top = int(top_raw)
        except ValueError:
            top = -1
        if not 1 <= top <= MAX_PAGE_SIZE:
            return self._error(call, 400, "Request_BadRequest", f"Invalid page size specified: '{top_raw}'. "
                               f"Must be between 1 and {MAX_PAGE_SIZE} inclusive.", endpoint)
        offset = 0
        token = call.query["$skiptoken"][0] if call.query.get("$skiptoken") else None
        if token is not None:
            try:
                offset = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("graphsim:"))
            except ValueError:
                return self._error(call, 400, "Directory_ExpiredPageToken",
                                   "The specified page token value has expired and can no longer be "
                                   "included in your request.", endpoint)
        users = self.tenant.visible_users(self.config.clock())
        filter_text = call.query["$filter"][0] if call.query.get("$filter") else None
        if filter_text is not None:
            predicate = compile_filter(filter_text)
            if predicate is None:
                return self._error(call, 400, "Request_UnsupportedQuery", "Unsupported Query.", endpoint)
            users = [u for u in users if predicate(u)]
        page = users[offset:offset + top]
        shape = f"users({','.join(select)})" if select else "users"
        body: dict[str, Any] = {"@odata.context": f"{self.base_url}/{call.version}/$metadata#{shape}"}
        if offset + top < len(users):
            next_token = base64.urlsafe_b64encode(f"graphsim:{offset + top}".encode()).decode()
            params = [f"$top={top}"]
            if select:
                params.append(f"$select={','.join(select)}")
            if filter_text is not None:
                params.append(f"$filter={filter_text}")
            params.append(f"$skiptoken={next_token}")
            body["@odata.nextLink"] = f"{self.base_url}/{call.version}/users?{'&'.join(params)}"
        body["value"] = [user_json(u, select) for u in page]
        return Reply(200, body, endpoint=endpoint)

    # -- writes --------------------------------------------------------------------------------------

    def _patch_user(self, call: Call, key: str) -> Reply:
        endpoint = "users.patch"
        if not call.app.roles & WRITE_USERS:
            return self._denied(call, endpoint, key)
        if call.body is BAD_JSON or not isinstance(call.body, dict):
            return self._bad_json(call, endpoint, key)
        user = self._user(key)
        if user is None:
            return self._not_found(call, key, endpoint)
        updates: dict[str, Any] = {}
        for name, value in call.body.items():
            canonical = _USER_PROPERTY_NAMES.get(name.lower())
            if canonical is None:
                return self._error(call, 400, "Request_BadRequest", f"Property '{name}' does not exist as a "
                                   "declared property or extension property.", endpoint, user=key)
            if canonical not in WRITABLE_USER_PROPERTIES:
                return self._error(call, 400, "Request_BadRequest", f"Property '{canonical}' is read-only "
                                   "and cannot be set.", endpoint, user=key)
            if canonical == "usageLocation":
                if value is not None and (not isinstance(value, str) or value not in ISO_COUNTRIES):
                    return self._error(call, 400, "Request_BadRequest", "Invalid value specified for "
                                       "property 'usageLocation' of resource 'User'.", endpoint, user=key)
            elif canonical == "accountEnabled":
                if not isinstance(value, bool):
                    return self._bad_json(call, endpoint, key)
            elif not isinstance(value, str) or not value:
                return self._error(call, 400, "Request_BadRequest", f"Invalid value specified for property "
                                   f"'{canonical}' of resource 'User'.", endpoint, user=key)
            updates[canonical] = value
        attribute = {"displayName": "display_name", "givenName": "given_name", "surname": "surname",
                     "jobTitle": "job_title", "accountEnabled": "account_enabled"}
        for name, value in updates.items():
            if name == "usageLocation":
                user.set_usage_location(value, self.config.clock())
            else:
                setattr(user, attribute[name], value)
        return Reply(204, None, endpoint=endpoint, user=key)

    def _assign_license(self, call: Call, key: str) -> Reply:
        endpoint = "assignLicense"
        if not call.app.roles & ASSIGN_LICENSES:
            return self._denied(call, endpoint, key)
        body = call.body
        if body is BAD_JSON or body is NO_BODY or not isinstance(body, dict):
            if body is NO_BODY:
                body = {}
            else:
                return self._bad_json(call, endpoint, key)
        missing = [name for name in ("addLicenses", "removeLicenses") if body.get(name) is None]
        if missing:
            return self._error(call, 400, "Request_BadRequest", "One or more parameters of the operation "
                               "'assignLicense' are missing from the request payload. The missing parameters "
                               f"are: {','.join(missing)}.", endpoint, user=key)
        add_raw, remove_raw = body["addLicenses"], body["removeLicenses"]
        if not isinstance(add_raw, list) or not isinstance(remove_raw, list):
            return self._bad_json(call, endpoint, key)
        if not add_raw and not remove_raw:
            return self._error(call, 400, "Request_BadRequest", "No license changes provided. At least one "
                               "license to add or remove must be specified.", endpoint, user=key)
        add: list[tuple[str, tuple[str, ...]]] = []
        for item in add_raw:
            if not isinstance(item, dict) or not _is_guid(item.get("skuId")):
                return self._error(call, 400, "Request_BadRequest", "Invalid value specified for property "
                                   "'skuId' of resource 'AssignedLicense'.", endpoint, user=key)
            disabled = item.get("disabledPlans") or []
            if not isinstance(disabled, list) or not all(_is_guid(p) for p in disabled):
                return self._error(call, 400, "Request_BadRequest", "Invalid value specified for property "
                                   "'disabledPlans' of resource 'AssignedLicense'.", endpoint, user=key)
            add.append((str(item["skuId"]).lower(), tuple(dict.fromkeys(str(p).lower() for p in disabled))))
        if not all(_is_guid(s) for s in remove_raw):
            return self._error(call, 400, "Request_BadRequest", "Invalid value specified for property "
                               "'removeLicenses' of resource 'User'.", endpoint, user=key)
        remove = list(dict.fromkeys(str(s).lower() for s in remove_raw))
        now = self.config.clock()
        user = self.tenant.visible_user(key, now)
        if user is None:
            return self._not_found(call, key, endpoint)
        seen_location = user.usage_location_seen(now, self.config.replication_lag_s)
        failure = self.tenant.assign_license(user, add, remove, seen_location)
        if failure is not None:
            return self._error(call, failure.status, failure.code, failure.message, endpoint, user=key)
        # v1.0 answers with the default property set; /beta with the whole updated user, licenses included.
        shape = None if call.version == "v1.0" else ALL_USER_PROPERTIES
        body_out = {"@odata.context": f"{self.base_url}/{call.version}/$metadata#users/$entity",
                    **user_json(user, shape)}
        return Reply(200, body_out, endpoint=endpoint, user=key)

    # -- $batch --------------------------------------------------------------------------------------

    def batch(self, call: Call, log_write: Callable[[str, str, Reply], None]) -> Reply:
        """Run a JSON batch: validate it whole, run each item independently, shuffle the responses."""
        endpoint = "$batch"
        body = call.body
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            return self._error(call, 400, "BadRequest", "Invalid batch payload format.", endpoint)
        requests: list[Any] = body["requests"]
        if len(requests) > MAX_BATCH_ITEMS:
            return self._error(call, 400, "BadRequest", f"The number of requests in the batch ({len(requests)}) "
                               f"exceeds the limit of {MAX_BATCH_ITEMS}.", endpoint)
        seen: set[str] = set()
        for item in requests:
            if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item.get(k)
                                                     for k in ("id", "method", "url")):
                return self._error(call, 400, "BadRequest", "Invalid batch payload format: every request "
                                   "needs string 'id', 'method' and 'url'.", endpoint)
            if item["id"] in seen:
                return self._error(call, 400, "BadRequest", f"Batch request contains duplicate request id "
                                   f"'{item['id']}'.", endpoint)
            seen.add(item["id"])
        for item in requests:
            depends = item.get("dependsOn") or []
            if not isinstance(depends, list) or any(d not in seen for d in depends):
                return self._error(call, 400, "BadRequest", f"Request '{item['id']}' depends on an unknown "
                                   "request id.", endpoint)
        statuses: dict[str, int] = {}
        responses: list[dict[str, Any]] = []
        for item in requests:
            reply = self._batch_item(call, item, statuses)
            statuses[item["id"]] = reply.status
            self.stats.count(reply.endpoint, reply.status)
            if item["method"].upper() in WRITE_METHODS:
                log_write(item["method"].upper(), item["url"], reply)
            headers: dict[str, str] = {}
            if reply.body is not None:
                headers["Content-Type"] = GRAPH_JSON
            headers.update(dict(reply.headers))
            response: dict[str, Any] = {"id": item["id"], "status": reply.status, "headers": headers}
            if reply.body is not None:
                response["body"] = reply.body
            responses.append(response)
        self._shuffle_rng.shuffle(responses)
        return Reply(200, {"responses": responses}, endpoint=endpoint)

    def _batch_item(self, call: Call, item: dict[str, Any], statuses: dict[str, int]) -> Reply:
        item_call_id = str(uuid.uuid4())
        url: str = item["url"]
        path, _, query = url.partition("?")
        sub = Call(method=item["method"].upper(), version=call.version, path=path,
                   query=parse_qs(query, keep_blank_values=True), body=item.get("body", NO_BODY),
                   app=call.app, request_id=item_call_id, client_request_id=call.client_request_id)
        segments = [s for s in path.strip("/").split("/") if s]
        endpoint = self.endpoint_of(sub.method, segments)
        for dep in item.get("dependsOn") or []:
            if not 200 <= statuses.get(dep, 0) < 300:
                return self._error(sub, 424, "FailedDependency", "The request failed because it depended on "
                                   "another request that failed.", endpoint)
        if endpoint == "$batch":
            return self._error(sub, 400, "BadRequest", "Nested batch requests are not supported.", endpoint)
        if url.lower().startswith(("http://", "https://")):
            return self._error(sub, 400, "BadRequest", "The url of a batch request must be relative.", endpoint)
        if sub.body is not NO_BODY:
            headers = item.get("headers") or {}
            if not isinstance(headers, dict) or not any(k.lower() == "content-type" for k in headers):
                return self._error(sub, 400, "BadRequest", "A Content-Type header is required for a batch "
                                   "request that has a body.", endpoint)
        return self.execute(sub)
