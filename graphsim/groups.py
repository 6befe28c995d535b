"""Security groups and group-based licensing: the group, its members' inherited assignments, fixture groups."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class AssignmentState(StrEnum):
    """licenseAssignmentState.state."""

    ACTIVE = "Active"
    ACTIVE_WITH_ERROR = "ActiveWithError"
    DISABLED = "Disabled"
    ERROR = "Error"


class AssignmentError(StrEnum):
    """licenseAssignmentState.error (Graph writes "Other", not the "Others" older docs named)."""

    NONE = "None"
    COUNT = "CountViolation"
    EXCLUSIVE = "MutuallyExclusiveViolation"
    DEPENDENCY = "DependencyViolation"
    LOCATION = "ProhibitedInUsageLocationViolation"
    UNIQUENESS = "UniquenessViolation"
    OTHER = "Other"


class ProcessingState(StrEnum):
    """group.licenseProcessingState.state."""

    QUEUED = "QueuedForProcessing"
    IN_PROGRESS = "ProcessingInProgress"
    COMPLETE = "ProcessingComplete"


class MemberKind(StrEnum):
    """What a group member is: a user, or a nested group (which licensing ignores)."""

    USER = "user"
    GROUP = "group"


HOLDING_STATES = frozenset({AssignmentState.ACTIVE, AssignmentState.ACTIVE_WITH_ERROR})


@dataclass(frozen=True, slots=True)
class InheritedLicense:
    """One SKU a user gets (or failed to get) from one group."""

    disabled: tuple[str, ...]
    state: AssignmentState
    error: AssignmentError
    updated: str

    @property
    def holds(self) -> bool:
        """Whether the user has the license through this assignment (and it takes a seat)."""
        return self.state in HOLDING_STATES


@dataclass(slots=True)
class Group:
    """A security group's mutable state: members in the order they were added, licenses, members in error."""

    id: str
    display_name: str
    mail_nickname: str
    description: str | None
    created: float
    members: dict[str, MemberKind] = field(default_factory=dict)
    # skuId -> disabled plan ids, in assignment order.
    licenses: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # User members whose assignments from this group are in error (Error or ActiveWithError).
    error_members: set[str] = field(default_factory=set)
    deleted: bool = False

    def user_members(self) -> list[str]:
        """Ids of the first-level user members (nested groups get no licenses)."""
        return [member for member, kind in self.members.items() if kind is MemberKind.USER]


@dataclass(frozen=True)
class GroupDef:
    """A licensed group as the fixture defines it."""

    id: str
    display_name: str
    licenses: tuple[tuple[str, tuple[str, ...]], ...]
    members: tuple[str, ...]
    created_ago_s: float = 400 * 86400.0


@dataclass(frozen=True)
class GroupTemplate:
    """A kind of licensed group the generator makes: its licenses, how often users land in it, and
    which share of the chosen users already holding `direct_sku` directly it takes first."""

    display_name: str
    licenses: tuple[tuple[str, tuple[str, ...]], ...]
    weight: float = 1.0
    direct_sku: str | None = None
    direct_share: float = 0.0
    min_members: int = 0


def group_templates(raw: Sequence[Mapping[str, Any]], sku_ids: Mapping[str, str],
                    plan_ids: Mapping[str, str]) -> tuple[GroupTemplate, ...]:
    """Templates from the fixture data, SKUs and plans given by part number / plan name."""
    templates = []
    for item in raw:
        if not all(lic["sku"] in sku_ids for lic in item["licenses"]):
            continue  # a fixture without that SKU gets no such group
        licenses = tuple((sku_ids[lic["sku"]], tuple(plan_ids[p].lower() for p in lic.get("disabled", ())))
                         for lic in item["licenses"])
        direct = item.get("direct_sku")
        templates.append(GroupTemplate(item["displayName"], licenses, float(item.get("weight", 1.0)),
                                       sku_ids[direct] if direct else None, float(item.get("direct_share", 0.0)),
                                       int(item.get("min_members", 0))))
    return tuple(templates)


def generate_groups(user_ids: Sequence[str], direct: Sequence[frozenset[str]], share: float, seed: int,
                    templates: Sequence[GroupTemplate]) -> tuple[GroupDef, ...]:
    """Licensed groups holding about `share` of the users, the same for the same seed (own random stream).

    `direct[i]` is the SKUs user i holds directly. Templates that name a `direct_sku` first take that share
    of the chosen users who hold it directly (so some hold a SKU both ways); a tenth of the members also
    join a second group; templates with `min_members` get at least that many (so seat-limited SKUs run out).
    """
    if share <= 0 or not templates or not user_ids:
        return ()
    rng = random.Random(f"groups:{seed}")
    count = min(len(user_ids), max(1, round(share * len(user_ids))))
    chosen = sorted(rng.sample(range(len(user_ids)), count))
    # Members per template, in the order they join (dicts as ordered sets).
    members: list[dict[str, None]] = [{} for _ in templates]
    placed: set[int] = set()
    for t, template in enumerate(templates):
        if template.direct_sku is None:
            continue
        holders = [i for i in chosen if template.direct_sku in direct[i] and i not in placed]
        for i in holders[: round(template.direct_share * len(holders))]:
            members[t][user_ids[i]] = None
            placed.add(i)
    weights = [t.weight for t in templates]
    for i in chosen:
        if i in placed:
            continue
        members[rng.choices(range(len(templates)), weights)[0]][user_ids[i]] = None
        if rng.random() < 0.1:
            members[rng.randrange(len(templates))][user_ids[i]] = None
    for t, template in enumerate(templates):
        missing = template.min_members - len(members[t])
        for i in chosen:
            if missing <= 0:
                break
            if user_ids[i] not in members[t]:
                members[t][user_ids[i]] = None
                missing -= 1
    return tuple(GroupDef(str(uuid.UUID(int=rng.getrandbits(128), version=4)), template.display_name,
                          template.licenses, tuple(members[t]), rng.uniform(30, 900) * 86400.0)
                 for t, template in enumerate(templates))


def group_from_json(raw: Mapping[str, Any], rng: random.Random, resolve_member: Mapping[str, str]) -> GroupDef:
    """A licensed group from a JSON fixture; members by id or userPrincipalName (ValueError when unknown)."""
    licenses = tuple((str(lic["skuId"]).lower(), tuple(str(p).lower() for p in lic.get("disabledPlans", ())))
                     for lic in raw.get("assignedLicenses", ()))
    unknown = [m for m in raw.get("members", ()) if str(m).lower() not in resolve_member]
    if unknown:
        raise ValueError(f"group {raw.get('displayName')!r} names members that are no users: {unknown}")
    members = tuple(resolve_member[str(m).lower()] for m in raw.get("members", ()))
    return GroupDef(str(raw.get("id") or uuid.UUID(int=rng.getrandbits(128), version=4)).lower(),
                    raw["displayName"], licenses, members)
