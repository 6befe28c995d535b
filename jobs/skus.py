"""A tenant's subscribed SKUs and service plans, and name resolution against them."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# Copy-pasted names carry NBSPs, tabs, zero-width spaces and BOMs (Microsoft's own SKU list has them).
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"), None)


class UnknownName(ValueError):
    """A license or service plan name that does not resolve in the tenant; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ServicePlan:
    """A service plan inside a SKU (Exchange, SharePoint, Teams ...): what `disabledPlans` names."""

    plan_id: str
    name: str


@dataclass(frozen=True)
class Sku:
    """One subscribed SKU of a tenant."""

    sku_id: str
    part_number: str
    applies_to: str
    capability_status: str
    enabled_units: int
    consumed_units: int
    plans: tuple[ServicePlan, ...] = ()


def normalize_name(text: str) -> str:
    """A name reduced for matching: invisible characters and all whitespace removed, upper-cased."""
    return "".join(text.translate(_INVISIBLE).split()).upper()


def is_guid(text: str) -> bool:
    """Whether `text` is a GUID in the 8-4-4-4-12 form."""
    return GUID_RE.fullmatch(text) is not None


def did_you_mean(wanted: str, candidates: Iterable[str]) -> str:
    """A '; did you mean X?' suffix for the closest candidates, or an empty string."""
    by_key = {c.upper(): c for c in candidates}
    close = difflib.get_close_matches(wanted.upper(), list(by_key), n=3, cutoff=0.6)
    if not close:
        return ""
    names = [by_key[c] for c in close]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    return f"; did you mean {listed}?"


def _listing(names: Sequence[str], limit: int = 12) -> str:
    """Names joined for a message, cut after `limit`."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])}, … ({len(names) - limit} more)"


def _display(text: str) -> str:
    """A name as written, with invisible characters dropped and whitespace runs collapsed."""
    return " ".join(text.translate(_INVISIBLE).split())


def _show(text: str, limit: int = 60) -> str:
    """A value as quoted in a message, shortened."""
    return text if len(text) <= limit else f"{text[:limit]}…"


class SkuCatalog:
    """The SKUs a tenant subscribes to, indexed by skuId and skuPartNumber."""

    def __init__(self, skus: Iterable[Sku]) -> None:
        self._skus: tuple[Sku, ...] = tuple(skus)
        self._by_id: dict[str, Sku] = {s.sku_id.lower(): s for s in self._skus}
        self._by_part: dict[str, Sku] = {normalize_name(s.part_number): s for s in self._skus}
        plan_names: dict[str, str] = {}
        plan_ids: dict[str, str] = {}
        for sku in self._skus:
            for plan in sku.plans:
                plan_names.setdefault(normalize_name(plan.name), plan.name)
                plan_ids.setdefault(plan.plan_id.lower(), plan.name)
        self._plan_names = plan_names
        self._plan_ids = plan_ids

    @classmethod
    def from_graph(cls, items: Iterable[Mapping[str, Any]]) -> SkuCatalog:
        """Build from the `value` list of Graph `GET /subscribedSkus`."""
        skus = []
        for item in items:
            prepaid = item.get("prepaidUnits") or {}
            plans = tuple(
                ServicePlan(plan_id=str(p["servicePlanId"]).lower(), name=str(p.get("servicePlanName") or ""))
                for p in item.get("servicePlans") or ()
                if p.get("servicePlanId")
            )
            skus.append(
                Sku(
                    sku_id=str(item["skuId"]).lower(),
                    part_number=str(item.get("skuPartNumber") or item["skuId"]).strip(),
                    applies_to=str(item.get("appliesTo") or "User"),
                    capability_status=str(item.get("capabilityStatus") or "Enabled"),
                    enabled_units=int(prepaid.get("enabled") or 0),
                    consumed_units=int(item.get("consumedUnits") or 0),
                    plans=plans,
                )
            )
        return cls(skus)

    @property
    def skus(self) -> tuple[Sku, ...]:
        """All SKUs, in Graph's order."""
        return self._skus

    def get(self, sku_id: str) -> Sku | None:
        """The SKU with this skuId, or None."""
        return self._by_id.get(sku_id.lower())

    def part_number(self, sku_id: str) -> str:
        """The skuPartNumber to show for a skuId (the id itself when the tenant lacks it)."""
        sku = self.get(sku_id)
        return sku.part_number if sku else sku_id

    def free_seats(self, sku_id: str) -> int:
        """Seats left: prepaidUnits.enabled − consumedUnits (racy: Graph may still refuse)."""
        sku = self.get(sku_id)
        if sku is None:
            raise KeyError(sku_id)
        return sku.enabled_units - sku.consumed_units

    def plan_name(self, plan_id: str) -> str:
        """The servicePlanName to show for a servicePlanId (the id itself when no SKU has it)."""
        return self._plan_ids.get(plan_id.lower()) or plan_id

    def _user_part_numbers(self) -> list[str]:
        return [s.part_number for s in self._skus if s.applies_to.lower() == "user"]

    def resolve_sku(self, text: str) -> Sku:
        """The user-assignable SKU named by a skuPartNumber or skuId; UnknownName otherwise."""
        key = normalize_name(text)
        if not key:
            raise UnknownName("license name is empty")
        shown = _show(key.lower() if is_guid(key) else _display(text))
        if is_guid(key):
            sku = self._by_id.get(key.lower())
            if sku is None:
                raise UnknownName(
                    f'unknown license "{shown}": no SKU with this skuId is subscribed in the tenant '
                    f"(subscribed: {_listing(self._user_part_numbers()) or 'none'})"
                )
        else:
            found = self._by_part.get(key)
            if found is None:
                hint = did_you_mean(key, self._user_part_numbers())
                if not hint:
                    hint = f"; subscribed: {_listing(self._user_part_numbers()) or 'none'}"
                raise UnknownName(f'unknown license "{shown}": no subscribed SKU has this skuPartNumber{hint}')
            sku = found
        if sku.applies_to.lower() != "user":
            raise UnknownName(
                f'license "{sku.part_number}" applies to the {sku.applies_to.lower()} and cannot be assigned to users'
            )
        return sku

    def resolve_plan(self, text: str, skus: Sequence[Sku]) -> list[tuple[str, str]]:
        """(skuId, servicePlanId) for each of `skus` containing the plan named or id'd by `text`."""
        key = normalize_name(text)
        if not key:
            raise UnknownName("service plan name is empty")
        by_id = is_guid(key)
        wanted = key.lower() if by_id else key
        hits = [
            (sku.sku_id, plan.plan_id)
            for sku in skus
            for plan in sku.plans
            if (plan.plan_id == wanted if by_id else normalize_name(plan.name) == wanted)
        ]
        if hits:
            return hits
        added = ", ".join(s.part_number for s in skus)
        known = wanted in self._plan_ids if by_id else wanted in self._plan_names
        shown = _show(wanted if by_id else _display(text))
        if known:
            name = f"{wanted} ({self._plan_ids[wanted]})" if by_id else self._plan_names[wanted]
            raise UnknownName(
                f"plan {name} is not in any added SKU ({added}); disable it only in a row that adds a SKU containing it"
            )
        if by_id:
            raise UnknownName(f'unknown service plan "{shown}": no subscribed SKU has a plan with this id')
        in_added = [p.name for s in skus for p in s.plans]
        hint = did_you_mean(key, in_added) or did_you_mean(key, self._plan_names.values())
        if not hint and in_added:
            hint = f"; plans in {added}: {_listing(sorted(set(in_added)))}"
        raise UnknownName(f'unknown service plan "{shown}": no subscribed SKU has a plan by this name{hint}')
