"""Reading the tenant itself, page by page: its licensed users (with sign-ins when asked) and a group's members.

Jobs built from the tenant (reclamation, the redundant-direct cleanup) start from such a scan. It
holds one page at a time: `GET /users?$select=...&$top=999` costs one resource unit a page; with
`signInActivity` selected Graph allows at most 120 users a page (and refuses a larger `$top`), so a
scan that reads sign-ins takes about eight times as many pages. Reading `signInActivity` needs
AuditLog.Read.All and an Entra ID P1/P2 tenant: without them Graph answers 403, and the scan says
which (SignInsUnavailable) so its caller can carry on with what it can read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from graphclient.client import MAX_PAGE_SIZE, GraphClient
from graphclient.errors import GraphPermanentError, ThrottleWaitTooLong
from graphclient.retry import RetryPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a scan reads of every user: the ids, the lifecycle attributes, and how each license is held.
SCAN_SELECT = ("id", "userPrincipalName", "accountEnabled", "createdDateTime", "usageLocation", "assignedLicenses",
               "licenseAssignmentStates")
# Graph's largest page when signInActivity is selected ("Cannot query data for more than 120 users at a time").
SIGN_IN_PAGE_SIZE = 120
# Graph's 403 codes for a signInActivity read the app or the tenant may not make, in an admin's words.
SIGN_INS_DENIED = {
    "Authentication_MSGraphPermissionMissing": "the app lacks the AuditLog.Read.All permission",
    "Authentication_RequestFromNonPremiumTenantOrB2CTenant": "the tenant has no Microsoft Entra ID P1 or P2 license",
}
USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"


class SignInsUnavailable(Exception):
    """Graph refused to tell sign-in activity (no AuditLog.Read.All, or no Entra ID P1/P2): the message says which."""


@dataclass(frozen=True)
class SignIns:
    """A user's last sign-ins as Graph tells them (None: never, or not recorded)."""

    last_successful: datetime | None
    last_attempt: datetime | None  # interactive, failed attempts included


@dataclass(frozen=True)
class ScannedUser:
    """One licensed user as the scan read it; `body` is the Graph user (license fields, ids) without sign-ins."""

    id: str
    upn: str
    enabled: bool
    created_at: datetime | None
    sign_ins: SignIns | None  # None when sign-ins were not read
    body: Mapping[str, Any]

    @classmethod
    def from_graph(cls, raw: Mapping[str, Any], *, sign_ins_read: bool) -> ScannedUser:
        """From a Graph user with SCAN_SELECT (and `signInActivity` when read) selected."""
        activity = raw.get("signInActivity") if sign_ins_read else None
        sign_ins = None
        if sign_ins_read:
            activity = activity if isinstance(activity, Mapping) else {}
            sign_ins = SignIns(parse_time(activity.get("lastSuccessfulSignInDateTime")),
                               parse_time(activity.get("lastSignInDateTime")))
        body = {k: v for k, v in raw.items() if k != "signInActivity"}
        return cls(id=str(raw.get("id") or ""), upn=str(raw.get("userPrincipalName") or ""),
                   enabled=raw.get("accountEnabled") is not False, created_at=parse_time(raw.get("createdDateTime")),
                   sign_ins=sign_ins, body=body)


def parse_time(raw: object) -> datetime | None:
    """A Graph date-time (`2024-05-01T08:00:00Z`) as an aware datetime; None when absent or unreadable."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


class TenantReader:
    """Pages through a tenant with the engine's retry policy; a throttle wait too long to hand back is slept through.

    A scan has no chunk to hand back: it is one long read that holds its worker slot anyway.
    """

    def __init__(self, graph: GraphClient, policy: RetryPolicy, sleep: Callable[[float], None],
                 on_page: Callable[[], None] = lambda: None, *, patient: bool = True) -> None:
        """`patient`: sleep through throttle waits the policy would hand back (else ThrottleWaitTooLong)."""
        self._graph = graph
        self._policy = policy
        self._sleep = sleep
        self._on_page = on_page  # told after each page (a scan checks for a cancel there)
        self._patient = patient
        self.pages = 0

    def licensed_users(self, *, sign_ins: bool) -> Iterator[ScannedUser]:
        """Every user holding at least one license, page by page; SignInsUnavailable when sign-ins are refused."""
        select = (*SCAN_SELECT, "signInActivity") if sign_ins else SCAN_SELECT
        top = SIGN_IN_PAGE_SIZE if sign_ins else MAX_PAGE_SIZE
        next_link: str | None = None
        while True:
            try:
                users, next_link = self._call(partial(self._graph.users_page, select, next_link, top))
            except GraphPermanentError as exc:
                if sign_ins and exc.status == 403 and exc.code in SIGN_INS_DENIED:
                    raise SignInsUnavailable(
                        f"sign-in activity cannot be read: {SIGN_INS_DENIED[exc.code or '']} (Graph: {exc.code})"
                    ) from exc
                raise
            self.pages += 1
            for raw in users:
                if raw.get("assignedLicenses"):  # group assignments in error alone hold nothing
                    yield ScannedUser.from_graph(raw, sign_ins_read=sign_ins)
            self._on_page()
            if next_link is None:
                return

    def transitive_member_ids(self, group_id: str) -> frozenset[str]:
        """The ids (lower-case) of the users in a group and in every group nested in it, at any depth."""
        users: set[str] = set()
        seen, todo = {group_id.lower()}, [group_id]
        while todo:
            group = todo.pop()
            next_link: str | None = None
            while True:
                members, next_link = self._call(partial(self._graph.group_members_page, group, ("id",), next_link))
                self.pages += 1
                for member in members:
                    member_id = str(member.get("id") or "").lower()
                    kind = member.get("@odata.type")
                    if kind == GROUP_TYPE and member_id not in seen:
                        seen.add(member_id)
                        todo.append(member_id)
                    elif kind in (USER_TYPE, None) and member_id:
                        users.add(member_id)
                if next_link is None:
                    break
        return frozenset(users)

    def groups_with_license_errors(self) -> Iterator[dict[str, Any]]:
        """Every group with members whose license from it is in error (`id`, `displayName`)."""
        next_link: str | None = None
        while True:
            groups, next_link = self._call(partial(self._graph.groups_page, ("id", "displayName"),
                                                   "hasMembersWithLicenseErrors eq true", next_link))
            self.pages += 1
            yield from groups
            if next_link is None:
                return

    def members_with_license_errors(self, group_id: str) -> Iterator[dict[str, Any]]:
        """The users whose license assignment from this group is in error, with their `licenseAssignmentStates`."""
        select = ("id", "userPrincipalName", "licenseAssignmentStates")
        next_link: str | None = None
        while True:
            users, next_link = self._call(partial(self._graph.group_members_page, group_id, select, next_link,
                                                  errors_only=True))
            self.pages += 1
            yield from users
            if next_link is None:
                return

    def _call(self, fn: Callable[[], T]) -> T:
        """One Graph read through the retry policy; a wait it would hand back is slept here and the read sent again."""
        while True:
            try:
                return self._policy.call(fn, sleep=self._sleep)
            except ThrottleWaitTooLong as exc:
                if not self._patient:
                    raise
                log.info("tenant scan: throttled, waiting %.1f s", exc.wait_s)
                self._sleep(exc.wait_s)
