"""Microsoft Graph's dispatcher: routes, throttling, subscribedSkus and $batch; users and groups live apart."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, unquote

from graphsim.config import SimConfig
from graphsim.groups_api import GroupsApi
from graphsim.licensing import GroupLicensing
from graphsim.permissions import READ_SKUS
from graphsim.stats import Stats
from graphsim.tenant import Tenant
from graphsim.throttle import (
    REPORT_ABOVE_FRACTION,
    WRITE_LIMIT_EXCEEDED,
    Throttler,
    ThrottleResult,
    format_retry_after,
    resource_units,
)
from graphsim.users_api import UsersApi
from graphsim.wire import (
    GRAPH_JSON,
    NO_BODY,
    WRITE_METHODS,
    Call,
    Reply,
    denied,
    error_body,
    error_reply,
    not_found,
)

MAX_BATCH_ITEMS = 20

# The method each route answers; any other method on it is 405.
_ROUTE_METHODS = {
    "subscribedSkus": "GET", "users.list": "GET", "users.get": "GET", "users.patch": "PATCH",
    "assignLicense": "POST", "licenseDetails": "GET", "reprocessLicenseAssignment": "POST",
    "groups.list": "GET", "groups.create": "POST", "groups.get": "GET", "groups.patch": "PATCH",
    "groups.delete": "DELETE", "groups.members": "GET", "groups.members.add": "POST",
    "groups.members.remove": "DELETE", "groups.assignLicense": "POST", "groups.membersWithLicenseErrors": "GET",
}
_USER_ACTIONS = ("assignLicense", "licenseDetails", "reprocessLicenseAssignment")
_GROUP_ACTIONS = {"members": "groups.members", "assignLicense": "groups.assignLicense",
                  "membersWithLicenseErrors": "groups.membersWithLicenseErrors"}
_ITEM_ROUTES = {"PATCH": "patch", "DELETE": "delete"}


def _usage_headers(units: int, used_fraction: float) -> tuple[tuple[str, str], ...]:
    """x-ms-resource-unit, and x-ms-throttle-limit-percentage once a limit is more than 80 % used."""
    if used_fraction > REPORT_ABOVE_FRACTION:
        return (("x-ms-resource-unit", str(units)), ("x-ms-throttle-limit-percentage", f"{used_fraction:.2f}"))
    return (("x-ms-resource-unit", str(units)),)


def _users_endpoint(method: str, segments: list[str]) -> str:
    if len(segments) == 1:
        return "users.list"
    if len(segments) == 2:
        return "users.patch" if method == "PATCH" else "users.get"
    if len(segments) == 3 and segments[2] in _USER_ACTIONS:
        return segments[2]
    return "other"


def _groups_endpoint(method: str, segments: list[str]) -> str:
    if len(segments) == 1:
        return "groups.create" if method == "POST" else "groups.list"
    if len(segments) == 2:
        return f"groups.{_ITEM_ROUTES.get(method, 'get')}"
    if len(segments) == 3:
        return _GROUP_ACTIONS.get(segments[2], "other")
    if segments[2] == "members" and segments[-1] == "$ref" and len(segments) in (4, 5):
        return "groups.members.add" if len(segments) == 4 else "groups.members.remove"
    return "other"


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
        self.licensing = GroupLicensing(tenant, lambda: self.config.group_license_delay_s,
                                        lambda: self.config.clock())
        self.users = UsersApi(tenant, self.licensing, base_url, lambda: self.config)
        self.groups = GroupsApi(tenant, self.licensing, base_url, lambda: self.config)
        self._handlers: dict[str, Callable[[Call, list[str]], Reply]] = {
            "subscribedSkus": self._subscribed_skus,
            "users.list": lambda c, _: self.users.list_users(c),
            "users.get": lambda c, s: self.users.get(c, s[1]),
            "users.patch": lambda c, s: self.users.patch(c, s[1]),
            "assignLicense": lambda c, s: self.users.assign_license(c, s[1]),
            "licenseDetails": lambda c, s: self.users.license_details(c, s[1]),
            "reprocessLicenseAssignment": lambda c, s: self.users.reprocess(c, s[1]),
            "groups.list": lambda c, _: self.groups.list_groups(c),
            "groups.create": lambda c, _: self.groups.create(c),
            "groups.get": lambda c, s: self.groups.get(c, s[1]),
            "groups.patch": lambda c, s: self.groups.patch(c, s[1]),
            "groups.delete": lambda c, s: self.groups.delete(c, s[1]),
            "groups.members": lambda c, s: self.groups.members(c, s[1]),
            "groups.membersWithLicenseErrors": lambda c, s: self.groups.members(c, s[1], errors_only=True),
            "groups.members.add": lambda c, s: self.groups.add_member_ref(c, s[1]),
            "groups.members.remove": lambda c, s: self.groups.remove_member_ref(c, s[1], s[3]),
            "groups.assignLicense": lambda c, s: self.groups.assign_license(c, s[1]),
        }

    # -- dispatch ------------------------------------------------------------------------------------

    @staticmethod
    def endpoint_of(method: str, segments: list[str]) -> str:
        """The stats name of a route."""
        if segments == ["subscribedSkus"] or (len(segments) == 2 and segments[0] == "subscribedSkus"):
            return "subscribedSkus"
        if segments and segments[0] == "users":
            return _users_endpoint(method, segments)
        if segments and segments[0] == "groups":
            return _groups_endpoint(method, segments)
        if segments == ["$batch"]:
            return "$batch"
        return "other"

    def execute(self, call: Call) -> Reply:
        """Run one call (never a $batch) and return its reply; due group license processing runs first."""
        self.licensing.run_due()
        segments = [unquote(s) for s in call.path.strip("/").split("/") if s]
        endpoint = self.endpoint_of(call.method, segments)
        user_key = segments[1] if len(segments) >= 2 and segments[0] == "users" else None
        group_key = segments[1] if len(segments) >= 2 and segments[0] == "groups" else None
        units = resource_units(call.method, segments, call.query)
        routed = _ROUTE_METHODS.get(endpoint) == call.method
        if routed and call.method in WRITE_METHODS:
            return self._write(call, segments, endpoint, user_key, group_key, units)
        result = self.throttler.charge(call.app.app_id, units, writes=0)
        if result.throttled:
            self.stats.refuse(units, read=True)
            return self._throttled(call, endpoint, user_key, group_key, result, units)
        if call.method == "GET":
            self.stats.accept_read(endpoint, units)
        else:
            self.stats.spend(units)
        reply = self._read(call, segments, endpoint, user_key, routed)
        return replace(reply, headers=reply.headers + _usage_headers(units, result.used_fraction))

    def _read(self, call: Call, segments: list[str], endpoint: str, user_key: str | None, routed: bool) -> Reply:
        if routed:
            return self._handlers[endpoint](call, segments)
        if endpoint != "other":
            return error_reply(call, 405, "Request_BadRequest",
                               "Specified HTTP method is not allowed for the request target.", endpoint,
                               user=user_key)
        first_unknown = next((s for s in segments if s not in ("users", "subscribedSkus", "groups")),
                             segments[0] if segments else "")
        return error_reply(call, 400, "BadRequest", f"Resource not found for the segment '{first_unknown}'.",
                           endpoint, user=user_key)

    def _write(self, call: Call, segments: list[str], endpoint: str, user_key: str | None, group_key: str | None,
               units: int) -> Reply:
        forced = self.config.force_429
        if forced is not None and forced.count > 0 and self._forced_matches(forced.user, user_key):
            remaining = forced.count - 1
            self.config = replace(self.config, force_429=replace(forced, count=remaining) if remaining else None)
            self.stats.throttled_responses += 1
            scope = f"Tenant_Application/Write/{call.app.app_id}/{self.tenant.tenant_id}"
            return self._throttled(call, endpoint, user_key, group_key,
                                   ThrottleResult(forced.retry_after_s, scope, 1.0, WRITE_LIMIT_EXCEEDED), units)
        result = self.throttler.charge(call.app.app_id, units, writes=1)
        if result.throttled:
            self.stats.refuse(units, read=False)
            return self._throttled(call, endpoint, user_key, group_key, result, units)
        self.stats.accept_write(units, group=segments[0] == "groups")
        reply = self._handlers[endpoint](call, segments)
        return Reply(reply.status, reply.body, reply.headers + _usage_headers(units, result.used_fraction),
                     endpoint, user_key, group_key or reply.group)

    def _forced_matches(self, wanted: str | None, user_key: str | None) -> bool:
        if wanted is None:
            return True
        if user_key is None:
            return False
        if wanted.lower() == user_key.lower():
            return True
        target = self.tenant.find_user(wanted)
        return target is not None and target is self.tenant.find_user(user_key)

    def _throttled(self, call: Call, endpoint: str, user_key: str | None, group_key: str | None,
                   result: ThrottleResult, units: int) -> Reply:
        body = error_body("TooManyRequests", "Please retry again later.", call.request_id,
                          call.client_request_id, {"code": "429", "message": "Please retry after", "status": "429"})
        headers = (("Retry-After", format_retry_after(result.retry_after_s or 0.0)),
                   ("x-ms-throttle-scope", result.scope or ""),
                   ("x-ms-throttle-information", result.information or WRITE_LIMIT_EXCEEDED),
                   ("x-ms-throttle-limit-percentage", "1.0"), ("x-ms-resource-unit", str(units)))
        return Reply(429, body, headers, endpoint, user_key, group_key)

    # -- reads ---------------------------------------------------------------------------------------

    def _subscribed_skus(self, call: Call, segments: list[str]) -> Reply:
        if not call.app.roles & READ_SKUS:
            return denied(call, "subscribedSkus")
        context = f"{self.base_url}/{call.version}/$metadata#subscribedSkus"
        if len(segments) == 2:
            for sku in self.tenant.skus.values():
                if segments[1].lower() in (f"{self.tenant.tenant_id}_{sku.sku_id}", sku.sku_id):
                    return Reply(200, {"@odata.context": f"{context}/$entity", **self.tenant.sku_json(sku)},
                                 endpoint="subscribedSkus")
            return not_found(call, segments[1], "subscribedSkus")
        value = [self.tenant.sku_json(sku) for sku in self.tenant.skus.values()]
        return Reply(200, {"@odata.context": context, "value": value}, endpoint="subscribedSkus")

    # -- $batch --------------------------------------------------------------------------------------

    def batch(self, call: Call, log_write: Callable[[str, str, Reply], None]) -> Reply:
        """Run a JSON batch: validate it whole, run each item independently, shuffle the responses."""
        endpoint = "$batch"
        body = call.body
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            return error_reply(call, 400, "BadRequest", "Invalid batch payload format.", endpoint)
        requests: list[Any] = body["requests"]
        if len(requests) > MAX_BATCH_ITEMS:
            return error_reply(call, 400, "BadRequest", f"The number of requests in the batch ({len(requests)}) "
                               f"exceeds the limit of {MAX_BATCH_ITEMS}.", endpoint)
        seen: set[str] = set()
        for item in requests:
            if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item.get(k)
                                                     for k in ("id", "method", "url")):
                return error_reply(call, 400, "BadRequest", "Invalid batch payload format: every request "
                                   "needs string 'id', 'method' and 'url'.", endpoint)
            if item["id"] in seen:
                return error_reply(call, 400, "BadRequest", f"Batch request contains duplicate request id "
                                   f"'{item['id']}'.", endpoint)
            seen.add(item["id"])
        for item in requests:
            depends = item.get("dependsOn") or []
            if not isinstance(depends, list) or any(d not in seen for d in depends):
                return error_reply(call, 400, "BadRequest", f"Request '{item['id']}' depends on an unknown "
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
                return error_reply(sub, 424, "FailedDependency", "The request failed because it depended on "
                                   "another request that failed.", endpoint)
        if endpoint == "$batch":
            return error_reply(sub, 400, "BadRequest", "Nested batch requests are not supported.", endpoint)
        if url.lower().startswith(("http://", "https://")):
            return error_reply(sub, 400, "BadRequest", "The url of a batch request must be relative.", endpoint)
        if sub.body is not NO_BODY:
            headers = item.get("headers") or {}
            if not isinstance(headers, dict) or not any(k.lower() == "content-type" for k in headers):
                return error_reply(sub, 400, "BadRequest", "A Content-Type header is required for a batch "
                                   "request that has a body.", endpoint)
        return self.execute(sub)
