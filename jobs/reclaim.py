"""Reclamation: which licensed users nobody uses any more, and which of their licenses to take back (pure).

A user is a candidate when the account is disabled, or when its last successful sign-in
(`signInActivity.lastSuccessfulSignInDateTime`) is older than N days; a user who never signed in
counts only once created more than N days ago. Excluded whatever their activity: users created
within the N days (new hires who have not started), members of the exclusion group (at any depth),
and UPNs matching the caller's patterns (shared and service accounts). Only licenses assigned
directly are taken back, and only those of the SKUs named (all when none is): a license a group
gives the user is never touched, and one held both ways frees no seat when its direct assignment
goes, so it is left too (the redundant-direct cleanup is the job for that).

Graph has recorded `lastSuccessfulSignInDateTime` only since 1 December 2023 and did not backfill
it: when N days reach further back, a user without it is judged by `lastSignInDateTime` (failed
attempts included: a user is never called inactive for longer than Graph can tell).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from jobs.holdings import Holdings
from jobs.models import Operation
from jobs.skus import SkuCatalog
from jobs.tenant_scan import ScannedUser

# From this day Graph records lastSuccessfulSignInDateTime (signInActivity docs: not backfilled).
SUCCESSFUL_SIGN_INS_SINCE = datetime(2023, 12, 1, tzinfo=UTC)
MAX_INACTIVE_DAYS = 3650
MAX_UPN_PATTERNS = 100


class Inactivity(StrEnum):
    """Why a user's licenses are reclaimed."""

    DISABLED = "disabled"
    INACTIVE = "inactive"
    NEVER_SIGNED_IN = "never_signed_in"


class Exclusion(StrEnum):
    """Why an inactive or disabled user is left alone."""

    NEW = "created_recently"
    GROUP = "exclusion_group"
    UPN = "upn_pattern"
    NOTHING_DIRECT = "no_direct_license"  # nothing to reclaim: the named SKUs are held through groups, or not at all
    # The run of a preview: the user signed in, joined the exclusion group or lost the covering group since.
    CHANGED_SINCE_PREVIEW = "changed_since_preview"


@dataclass(frozen=True)
class ReclaimCriteria:
    """What the caller asked: N days, the SKUs (empty: all), and whom to leave alone."""

    inactive_days: int
    as_of: datetime
    skus: frozenset[str] = frozenset()  # skuIds, lower-case
    exclude_upns: tuple[str, ...] = ()  # shell-style patterns (`svc-*@contoso.com`), any case
    excluded_ids: frozenset[str] = frozenset()  # the exclusion group's members, lower-case ids
    sign_ins_known: bool = True  # False: sign-ins could not be read, only disabled accounts qualify

    @property
    def cutoff(self) -> datetime:
        """Activity before this moment is inactivity."""
        return self.as_of - timedelta(days=self.inactive_days)


@dataclass(frozen=True)
class Candidate:
    """A user whose licenses the job takes back: why, and which (skuIds); `kept` are group-held ones left alone."""

    user: ScannedUser
    why: Inactivity
    detail: str
    skus: tuple[str, ...]
    kept: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """What the scan decided for one licensed user: a candidate, an exclusion, or neither (active)."""

    candidate: Candidate | None = None
    excluded: Exclusion | None = None


def judge(user: ScannedUser, criteria: ReclaimCriteria) -> Verdict:
    """The verdict for one licensed user."""
    inactivity = _inactivity(user, criteria)
    if inactivity is None:
        return Verdict()
    why, detail = inactivity
    # Graph leaves createdDateTime null on some accounts created long ago: they are not new.
    if user.created_at is not None and user.created_at > criteria.cutoff:
        return Verdict(excluded=Exclusion.NEW)
    if user.id.lower() in criteria.excluded_ids:
        return Verdict(excluded=Exclusion.GROUP)
    upn = user.upn.lower()
    if any(fnmatch.fnmatchcase(upn, pattern.lower()) for pattern in criteria.exclude_upns):
        return Verdict(excluded=Exclusion.UPN)
    holdings = Holdings.from_graph(user.body)
    named = [h for h in holdings.held() if not criteria.skus or h.sku_id in criteria.skus]
    take = tuple(h.sku_id for h in named if h.held_directly and not h.via_group)
    if not take:
        return Verdict(excluded=Exclusion.NOTHING_DIRECT)
    kept = tuple(h.sku_id for h in named if h.via_group)
    return Verdict(candidate=Candidate(user, why, detail, take, kept))


def _inactivity(user: ScannedUser, criteria: ReclaimCriteria) -> tuple[Inactivity, str] | None:
    """Why the user counts as unused (and the detail in words), or None while in use."""
    if not user.enabled:
        return Inactivity.DISABLED, "the account is disabled"
    if not criteria.sign_ins_known or user.sign_ins is None:
        return None
    last = user.sign_ins.last_successful
    if last is None and criteria.cutoff < SUCCESSFUL_SIGN_INS_SINCE:
        last = user.sign_ins.last_attempt  # not recorded before December 2023: the older field tells more
    if last is None:
        return Inactivity.NEVER_SIGNED_IN, "no successful sign-in recorded"
    if last < criteria.cutoff:
        days = (criteria.as_of - last).days
        return Inactivity.INACTIVE, f"last successful sign-in {_day(last)} ({days} days ago)"
    return None


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def reclaim_operation(row: int, candidate: Candidate, catalog: SkuCatalog) -> Operation:
    """The removal job's operation for a candidate: the user by id, the UPN and the reason echoed in the results."""
    user = candidate.user
    extra = [("userPrincipalName", user.upn), ("reclaim_reason", candidate.why.value),
             ("reclaim_detail", candidate.detail)]
    if user.created_at is not None:
        extra.append(("created", _day(user.created_at)))
    if candidate.kept:
        extra.append(("kept_group_licenses", ";".join(catalog.part_number(s) for s in candidate.kept)))
    return Operation(row=row, user=user.id, remove=candidate.skus, extra=tuple(extra),
                     source=(("remove", ";".join(catalog.part_number(s) for s in candidate.skus)),))


def parse_upn_patterns(raw: Iterable[str]) -> tuple[str, ...]:
    """Patterns as given (comma- or line-separated pieces split), blanks dropped, order kept, no repeats."""
    pieces = (p.strip() for text in raw for line in text.splitlines() for p in line.split(","))
    return tuple(dict.fromkeys(p for p in pieces if p))
