"""Graph's group routes: security groups, their members, and group-based license assignment."""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from graphsim.groups import Group, MemberKind
from graphsim.lifecycle import iso
from graphsim.permissions import (
    ASSIGN_GROUP_LICENSES,
    CREATE_GROUPS,
    READ_GROUPS,
    WRITE_GROUPS,
    WRITE_MEMBERS,
)
from graphsim.query import FilterSpec, compile_filter, next_link, parse_select
from graphsim.routes import TenantRoutes
from graphsim.tenant import User
from graphsim.users_api import USER_PROPERTY_NAMES, page_size, parse_license_changes, sign_in_refusal, user_json
from graphsim.wire import (
    BAD_JSON,
    Call,
    Reply,
    bad_json,
    bad_request,
    denied,
    error_reply,
    not_found,
)

# At most this many member (and owner) links per request (group-post-members; docs-contrib#6453).
MAX_LINK_CHANGES = 20
LINK_LIMIT_MESSAGE = f"A resource cannot contain more than {MAX_LINK_CHANGES} link changes"
ALREADY_MEMBER = "One or more added object references already exist for the following modified properties: 'members'."
# Graph's text, capital C and grammar included, for distribution lists and mail-enabled security groups.
MAIL_ENABLED_REFUSED = "Cannot Create a mail-enabled security groups and or distribution list."
LICENSED_GROUP_DELETE = "The group cannot be deleted because it has licenses assigned. Remove its licenses first."

# GET /groups/{id} without $select (the v1.0 list-groups example's properties).
DEFAULT_GROUP_PROPERTIES = (
    "id", "deletedDateTime", "classification", "createdDateTime", "creationOptions", "description", "displayName",
    "expirationDateTime", "groupTypes", "isAssignableToRole", "mail", "mailEnabled", "mailNickname",
    "membershipRule", "membershipRuleProcessingState", "onPremisesDomainName", "onPremisesLastSyncDateTime",
    "onPremisesNetBiosName", "onPremisesSamAccountName", "onPremisesSecurityIdentifier", "onPremisesSyncEnabled",
    "preferredDataLocation", "preferredLanguage", "proxyAddresses", "renewedDateTime", "resourceBehaviorOptions",
    "resourceProvisioningOptions", "securityEnabled", "securityIdentifier", "theme", "visibility",
    "onPremisesProvisioningErrors", "serviceProvisioningErrors",
)
# Returned only on $select; hasMembersWithLicenseErrors is never returned (filter only).
SELECT_ONLY_GROUP_PROPERTIES = ("assignedLicenses", "licenseProcessingState", "hasMembersWithLicenseErrors")
GROUP_PROPERTY_NAMES = {n.lower(): n for n in (*DEFAULT_GROUP_PROPERTIES, *SELECT_ONLY_GROUP_PROPERTIES)}
_NEVER_RETURNED = frozenset({"hasMembersWithLicenseErrors"})
_EMPTY_LISTS = frozenset({"creationOptions", "groupTypes", "proxyAddresses", "resourceBehaviorOptions",
                          "resourceProvisioningOptions", "onPremisesProvisioningErrors",
                          "serviceProvisioningErrors"})
_BIND = re.compile(r"^(?:https?://[^/]+)?/?(?:v1\.0/|beta/)?(?P<kind>directoryObjects|users|groups)/(?P<key>[^/?#]+)$",
                   re.IGNORECASE)
_CREATE_KEYS = frozenset({"displayName", "mailNickname", "mailEnabled", "securityEnabled", "description",
                          "groupTypes", "members@odata.bind"})


def _security_identifier(group_id: str) -> str:
    """The SID Entra gives a cloud group: S-1-12-1 and the object id as four 32-bit numbers."""
    return "S-1-12-1-" + "-".join(str(n) for n in struct.unpack("<IIII", uuid.UUID(group_id).bytes_le))


def group_json(group: Group, select: Sequence[str] | None, state: Callable[[Group], str]) -> dict[str, Any]:
    """A group as Graph returns it: the default property set, or the $select-ed ones."""
    values: dict[str, Callable[[], Any]] = {
        "id": lambda: group.id, "createdDateTime": lambda: iso(group.created),
        "renewedDateTime": lambda: iso(group.created), "description": lambda: group.description,
        "displayName": lambda: group.display_name, "mailEnabled": lambda: False,
        "mailNickname": lambda: group.mail_nickname, "securityEnabled": lambda: True,
        "securityIdentifier": lambda: _security_identifier(group.id),
        "assignedLicenses": lambda: [{"disabledPlans": list(d), "skuId": s} for s, d in group.licenses.items()],
        "licenseProcessingState": lambda: {"state": state(group)},
    }
    names = select if select is not None else DEFAULT_GROUP_PROPERTIES
    return {name: values[name]() if name in values else ([] if name in _EMPTY_LISTS else None)
            for name in names if name not in _NEVER_RETURNED}


GROUP_FILTER = FilterSpec(
    names=GROUP_PROPERTY_NAMES,
    equality=frozenset({"id", "displayName", "mailNickname", "securityEnabled", "mailEnabled",
                        "hasMembersWithLicenseErrors"}),
    dates=frozenset({"createdDateTime"}),
    value=lambda group, prop: {
        "id": group.id, "displayName": group.display_name, "mailNickname": group.mail_nickname,
        "securityEnabled": True, "mailEnabled": False, "createdDateTime": group.created,
        "hasMembersWithLicenseErrors": bool(group.error_members),
    }[prop],
    skus=lambda group: group.licenses,
)


class GroupsApi(TenantRoutes):
    """The group routes; license changes reach members through `licensing`."""

    def _json(self, group: Group, select: Sequence[str] | None) -> dict[str, Any]:
        return group_json(group, select, lambda g: self.licensing.state(g).value)

    def _entity(self, call: Call, group: Group, select: Sequence[str] | None = None) -> dict[str, Any]:
        shape = f"groups({','.join(select)})" if select else "groups"
        return {"@odata.context": f"{self.base_url}/{call.version}/$metadata#{shape}/$entity",
                **self._json(group, select)}

    def _group(self, call: Call, key: str, endpoint: str, roles: frozenset[str]) -> Group | Reply:
        if not call.app.roles & roles:
            return denied(call, endpoint, group=key)
        group = self.tenant.find_group(key)
        return not_found(call, key, endpoint, group=key) if group is None else group

    # -- reads -----------------------------------------------------------------------------------------

    def get(self, call: Call, key: str) -> Reply:
        """GET /groups/{id}."""
        endpoint = "groups.get"
        group = self._group(call, key, endpoint, READ_GROUPS)
        if isinstance(group, Reply):
            return group
        select = parse_select(call.query.get("$select"), GROUP_PROPERTY_NAMES)
        if isinstance(select, str):
            return _unknown_property(call, select, "Group", endpoint)
        return Reply(200, self._entity(call, group, select), endpoint=endpoint, group=key)

    def list_groups(self, call: Call) -> Reply:
        """GET /groups: paged; $filter by name, security, licenses or hasMembersWithLicenseErrors."""
        endpoint = "groups.list"
        if not call.app.roles & READ_GROUPS:
            return denied(call, endpoint)
        select = parse_select(call.query.get("$select"), GROUP_PROPERTY_NAMES)
        if isinstance(select, str):
            return _unknown_property(call, select, "Group", endpoint)
        filter_text = call.query["$filter"][0] if call.query.get("$filter") else None
        groups: list[Group] = self.tenant.group_order
        if filter_text is not None:
            compiled = compile_filter(filter_text, GROUP_FILTER)
            if compiled is None:
                return error_reply(call, 400, "Request_UnsupportedQuery", "Unsupported Query.", endpoint)
            groups = [g for g in groups if compiled.predicate(g)]
        return self._page(call, endpoint, "groups", "groups", groups, select, filter_text,
                          lambda g: self._json(g, select))

    def members(self, call: Call, key: str, *, errors_only: bool = False) -> Reply:
        """GET /groups/{id}/members (users and nested groups) or /membersWithLicenseErrors (users)."""
        endpoint = "groups.membersWithLicenseErrors" if errors_only else "groups.members"
        group = self._group(call, key, endpoint, READ_GROUPS)
        if isinstance(group, Reply):
            return group
        if call.query.get("$filter"):
            return error_reply(call, 400, "Request_UnsupportedQuery", "Unsupported Query.", endpoint, group=key)
        select = parse_select(call.query.get("$select"), {**GROUP_PROPERTY_NAMES, **USER_PROPERTY_NAMES})
        if isinstance(select, str):
            return _unknown_property(call, select, "DirectoryObject", endpoint)
        if select and "signInActivity" in select:
            refusal = sign_in_refusal(call, endpoint, self._config().premium)
            if refusal is not None:
                return refusal
        ids = [m for m in group.user_members() if m in group.error_members] if errors_only else list(group.members)
        segment = "membersWithLicenseErrors" if errors_only else "members"
        return self._page(call, endpoint, f"groups/{group.id}/{segment}", "directoryObjects", ids, select, None,
                          lambda member: self._member_json(member, select), group=key)

    def _member_json(self, member: str, select: tuple[str, ...] | None) -> dict[str, Any]:
        user = self.tenant.users.get(member)
        if user is not None:
            names = None if select is None else tuple(n for n in select if n in USER_PROPERTY_NAMES.values())
            return {"@odata.type": "#microsoft.graph.user", **user_json(user, names)}
        nested = self.tenant.groups[member]
        names = None if select is None else tuple(n for n in select if n in GROUP_PROPERTY_NAMES.values())
        return {"@odata.type": "#microsoft.graph.group", **self._json(nested, names)}

    def _page(self, call: Call, endpoint: str, path: str, kind: str, items: Sequence[Any],
              select: tuple[str, ...] | None, filter_text: str | None, render: Callable[[Any], dict[str, Any]], *,
              group: str | None = None) -> Reply:
        """One page of `items` at `path` (of `kind` objects), with a nextLink when more follow."""
        size = page_size(call, endpoint, None)
        if isinstance(size, Reply):
            return size
        top, offset = size
        shape = f"{kind}({','.join(select)})" if select else kind
        body: dict[str, Any] = {"@odata.context": f"{self.base_url}/{call.version}/$metadata#{shape}"}
        if offset + top < len(items):
            body["@odata.nextLink"] = next_link(f"{self.base_url}/{call.version}/{path}", top, offset + top, select,
                                                filter_text)
        body["value"] = [render(item) for item in items[offset:offset + top]]
        return Reply(200, body, endpoint=endpoint, group=group)

    # -- writes ----------------------------------------------------------------------------------------

    def create(self, call: Call) -> Reply:
        """POST /groups: a security group (not mail-enabled), optionally with up to 20 members."""
        endpoint = "groups.create"
        if not call.app.roles & CREATE_GROUPS:
            return denied(call, endpoint)
        body = call.body
        if body is BAD_JSON or not isinstance(body, dict):
            return bad_json(call, endpoint)
        refusal = _creation_refusal(call, body, endpoint)
        if refusal is not None:
            return refusal
        links = self._link_changes(call, None, body.get("members@odata.bind", []), endpoint)
        if isinstance(links, Reply):
            return links
        group = self.tenant.add_group(body["displayName"], body["mailNickname"], body.get("description"))
        self.tenant.add_members(group, links)
        return Reply(201, self._entity(call, group), endpoint=endpoint, group=group.id)

    def patch(self, call: Call, key: str) -> Reply:
        """PATCH /groups/{id}: displayName, description and `members@odata.bind` (up to 20), all or nothing."""
        endpoint = "groups.patch"
        body = call.body
        binds = isinstance(body, dict) and "members@odata.bind" in body
        group = self._group(call, key, endpoint, WRITE_MEMBERS if binds else WRITE_GROUPS)
        if isinstance(group, Reply):
            return group
        if body is BAD_JSON or not isinstance(body, dict):
            return bad_json(call, endpoint, group=key)
        if set(body) - {"members@odata.bind"} and not call.app.roles & WRITE_GROUPS:
            return denied(call, endpoint, group=key)
        for name, value in body.items():
            if name not in ("displayName", "description", "members@odata.bind"):
                return bad_request(call, f"Property '{name}' is read-only and cannot be set." if name.lower()
                                   in GROUP_PROPERTY_NAMES else f"Property '{name}' does not exist as a declared "
                                   "property or extension property.", endpoint, group=key)
            if name == "displayName" and (not isinstance(value, str) or not value.strip()):
                return bad_request(call, "Invalid value specified for property 'displayName' of resource "
                                   "'Group'.", endpoint, group=key)
            if name == "description" and value is not None and not isinstance(value, str):
                return bad_request(call, "Invalid value specified for property 'description' of resource "
                                   "'Group'.", endpoint, group=key)
        links = self._link_changes(call, group, body.get("members@odata.bind", []), endpoint)
        if isinstance(links, Reply):
            return links
        group.display_name = body.get("displayName", group.display_name)
        group.description = body.get("description", group.description)
        self._add_members(group, links)
        return Reply(204, None, endpoint=endpoint, group=key)

    def add_member_ref(self, call: Call, key: str) -> Reply:
        """POST /groups/{id}/members/$ref with {"@odata.id": ...}."""
        endpoint = "groups.members.add"
        group = self._group(call, key, endpoint, WRITE_MEMBERS)
        if isinstance(group, Reply):
            return group
        body = call.body
        if body is BAD_JSON or not isinstance(body, dict) or not isinstance(body.get("@odata.id"), str):
            return bad_json(call, endpoint, group=key)
        links = self._link_changes(call, group, [body["@odata.id"]], endpoint)
        if isinstance(links, Reply):
            return links
        self._add_members(group, links)
        return Reply(204, None, endpoint=endpoint, group=key)

    def remove_member_ref(self, call: Call, key: str, member: str) -> Reply:
        """DELETE /groups/{id}/members/{member id}/$ref."""
        endpoint = "groups.members.remove"
        group = self._group(call, key, endpoint, WRITE_MEMBERS)
        if isinstance(group, Reply):
            return group
        member_id = member.lower()
        kind = group.members.get(member_id)
        if kind is None:
            return not_found(call, member, endpoint, group=key)
        self.tenant.remove_member(group, member_id)
        user = self.tenant.users.get(member_id)
        if kind is MemberKind.USER and user is not None and (group.licenses or group.id in user.inherited):
            self.licensing.enqueue(group, [member_id])
        return Reply(204, None, endpoint=endpoint, group=key)

    def assign_license(self, call: Call, key: str) -> Reply:
        """POST /groups/{id}/assignLicense: 202 at once; members are licensed when the group is processed."""
        endpoint = "groups.assignLicense"
        group = self._group(call, key, endpoint, ASSIGN_GROUP_LICENSES)
        if isinstance(group, Reply):
            return group
        changes = parse_license_changes(call, endpoint, "Group", group=key)
        if isinstance(changes, Reply):
            return changes
        add, remove = changes
        refusal = self._license_refusal(group, add, remove)
        if refusal is not None:
            return bad_request(call, refusal, endpoint, group=key)
        licenses = {s: p for s, p in group.licenses.items() if s not in remove}
        licenses.update(add)
        group.licenses = licenses
        self.licensing.enqueue_all(group)
        location = (f"{self.base_url}/v2/{self.tenant.tenant_id}/directoryObjects/{group.id}/"
                    "Microsoft.DirectoryServices.Group")
        return Reply(202, self._entity(call, group), (("Location", location),), endpoint, group=key)

    def delete(self, call: Call, key: str) -> Reply:
        """DELETE /groups/{id}: refused while the group still has licenses."""
        endpoint = "groups.delete"
        group = self._group(call, key, endpoint, WRITE_GROUPS)
        if isinstance(group, Reply):
            return group
        if group.licenses:
            return bad_request(call, LICENSED_GROUP_DELETE, endpoint, group=key)
        self.tenant.delete_group(group)
        return Reply(204, None, endpoint=endpoint, group=key)

    # -- helpers ---------------------------------------------------------------------------------------

    def _add_members(self, group: Group, links: list[tuple[str, MemberKind]]) -> None:
        self.tenant.add_members(group, links)
        users = [member for member, kind in links if kind is MemberKind.USER]
        if group.licenses and users:
            self.licensing.enqueue(group, users)

    def _license_refusal(self, group: Group, add: list[tuple[str, tuple[str, ...]]], remove: list[str]) -> str | None:
        for sku_id in remove:
            if sku_id not in group.licenses:
                return "Group does not have a corresponding license."
        for sku_id, disabled in add:
            sku = self.tenant.skus.get(sku_id)
            if sku is None:
                return f"License {sku_id} does not correspond to a valid company License."
            if sku.applies_to != "User":
                return f"License {sku_id} cannot be assigned to a group."
            for plan in disabled:
                if plan not in sku.plan_ids:
                    return f"Invalid service plan {plan} specified in disabledPlans for License {sku_id}."
        return None

    def _link_changes(self, call: Call, group: Group | None, refs: Any,
                      endpoint: str) -> list[tuple[str, MemberKind]] | Reply:
        """The members a list of `@odata.bind` URLs adds, or the error that adds none of them."""
        key = group.id if group is not None else None
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            return bad_json(call, endpoint, group=key)
        if len(refs) > MAX_LINK_CHANGES:
            return bad_request(call, LINK_LIMIT_MESSAGE, endpoint, group=key)
        links: list[tuple[str, MemberKind]] = []
        for ref in refs:
            m = _BIND.match(ref.strip())
            if m is None:
                return bad_request(call, "Invalid URL format specified in @odata.bind for members", endpoint,
                                   group=key)
            target = self._resolve(m["kind"].lower(), m["key"])
            if target is None:
                return not_found(call, m["key"], endpoint, group=key)
            if group is not None and target[0] == group.id:
                return bad_request(call, "A group cannot be a member of itself.", endpoint, group=key)
            if (group is not None and target[0] in group.members) or target in links:
                return bad_request(call, ALREADY_MEMBER, endpoint, group=key)
            links.append(target)
        return links

    def _resolve(self, kind: str, key: str) -> tuple[str, MemberKind] | None:
        if kind in ("users", "directoryobjects"):
            user: User | None = self.tenant.visible_user(key, self._config().clock())
            if user is not None:
                return user.id, MemberKind.USER
        if kind in ("groups", "directoryobjects"):
            group = self.tenant.find_group(key)
            if group is not None:
                return group.id, MemberKind.GROUP
        return None


def _unknown_property(call: Call, name: str, type_name: str, endpoint: str) -> Reply:
    return bad_request(call, f"Could not find a property named '{name}' on type "
                       f"'Microsoft.DirectoryServices.{type_name}'.", endpoint)


def _creation_refusal(call: Call, body: dict[str, Any], endpoint: str) -> Reply | None:
    """Why POST /groups refuses a body: unknown or missing properties, or a group graphsim does not model."""
    for name in body:
        if name not in _CREATE_KEYS:
            if name.lower() == "owners@odata.bind":
                return bad_request(call, "graphsim does not model group owners.", endpoint)
            return bad_request(call, f"Property '{name}' does not exist as a declared property or extension "
                               "property.", endpoint)
    for name, kind in (("displayName", str), ("mailNickname", str), ("mailEnabled", bool),
                       ("securityEnabled", bool)):
        value = body.get(name)
        if not isinstance(value, kind) or (kind is str and not str(value).strip()):
            return bad_request(call, f"Invalid value specified for property '{name}' of resource 'Group'.",
                               endpoint)
    if body.get("description") is not None and not isinstance(body["description"], str):
        return bad_request(call, "Invalid value specified for property 'description' of resource 'Group'.",
                           endpoint)
    if body.get("groupTypes") not in (None, []):
        return bad_request(call, "graphsim models security groups only (securityEnabled true, groupTypes []).",
                           endpoint)
    if body["mailEnabled"] or not body["securityEnabled"]:
        return bad_request(call, MAIL_ENABLED_REFUSED, endpoint)
    return None

