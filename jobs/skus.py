"""A tenant's subscribed SKUs and service plans, and name resolution against them."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs.product_names import ProductNames, shipped

GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

# Copy-pasted names carry NBSPs, tabs, zero-width spaces and BOMs (Microsoft's own SKU list has them).
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"), None)


class UnknownName(ValueError):
    """A license or service plan name that does not resolve in the tenant; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# `contoso:ENTERPRISEPACK` (MSOnline's AccountSkuId): the account name, a colon, the part number.
_ACCOUNT_PREFIX_RE = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9-]{0,62})\s*:\s*(\S.*)", re.DOTALL)
# Part numbers contain no "+"; display names sometimes do ("Enterprise Mobility + Security E5").
JOIN = "+"
_MAX_JOINED_PIECES = 24


@dataclass(frozen=True)
class Plan:
    """A service plan inside a SKU."""

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
    plans: tuple[Plan, ...] = ()
    account_name: str = ""


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
    """The SKUs a tenant subscribes to, indexed by skuId and skuPartNumber, and by Microsoft's display names.

    A license is named by its skuPartNumber, its skuId, MSOnline's `account:PARTNUMBER` form, or
    the display name Microsoft's product table gives it (jobs.product_names); every form resolves
    against the subscribed SKUs only. A display name that fits several subscribed SKUs is refused
    with the candidates named, never guessed.
    """

    def __init__(self, skus: Iterable[Sku], names: ProductNames | None = None) -> None:
        self._skus: tuple[Sku, ...] = tuple(skus)
        self._names = names if names is not None else shipped()
        self._by_id: dict[str, Sku] = {s.sku_id.lower(): s for s in self._skus}
        self._by_part: dict[str, Sku] = {normalize_name(s.part_number): s for s in self._skus}
        self._known_parts = frozenset(normalize_name(p.part_number) for p in self._names.products)
        self.account_names = tuple(dict.fromkeys(s.account_name for s in self._skus if s.account_name))
        plan_names: dict[str, str] = {}
        plan_ids: dict[str, str] = {}
        for sku in self._skus:
            for plan in sku.plans:
                plan_names.setdefault(normalize_name(plan.name), plan.name)
                plan_ids.setdefault(plan.plan_id.lower(), plan.name)
        self._plan_names = plan_names
        self._plan_ids = plan_ids

    @classmethod
    def from_graph(cls, items: Iterable[Mapping[str, Any]], names: ProductNames | None = None) -> SkuCatalog:
        """Build from the `value` list of Graph `GET /subscribedSkus`."""
        skus = []
        for item in items:
            prepaid = item.get("prepaidUnits") or {}
            plans = tuple(
                Plan(plan_id=str(p["servicePlanId"]).lower(), name=str(p.get("servicePlanName") or ""))
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
                    account_name=str(item.get("accountName") or "").strip(),
                )
            )
        return cls(skus, names)

    @property
    def skus(self) -> tuple[Sku, ...]:
        """All SKUs, in Graph's order."""
        return self._skus

    @property
    def product_names(self) -> ProductNames:
        """Microsoft's product table the catalog reads display names with."""
        return self._names

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

    def _user_names(self) -> list[str]:
        """The subscribed user SKUs' part numbers and Microsoft's display names for them, for suggestions."""
        found = self._user_part_numbers()
        for sku in self._skus:
            if sku.applies_to.lower() == "user":
                found.extend(self._names.names_of(sku.sku_id))
        return found

    def resolve_sku(self, text: str) -> Sku:
        """The user-assignable SKU a skuPartNumber, skuId, `account:PART` or display name names; else UnknownName."""
        key = normalize_name(text)
        if not key:
            raise UnknownName("license name is empty")
        if is_guid(key):
            sku = self._by_id.get(key.lower())
            if sku is None:
                named = self._names.names_of(key)
                what = f" ({' / '.join(named)})" if named else ""
                raise UnknownName(
                    f'unknown license "{key.lower()}"{what}: no SKU with this skuId is subscribed in the tenant '
                    f"(subscribed: {_listing(self._user_part_numbers()) or 'none'})"
                )
        else:
            sku = self._by_part.get(key) or self._by_prefixed(text) or self._by_display_name(text)
            if sku is None:
                raise UnknownName(self._unknown_part(text, key))
        if sku.applies_to.lower() != "user":
            raise UnknownName(
                f'license "{sku.part_number}" applies to the {sku.applies_to.lower()} and cannot be assigned to users'
            )
        return sku

    def _unknown_part(self, text: str, key: str) -> str:
        """Why `text` names no subscribed SKU, with the closest names the tenant has."""
        shown = _show(_display(text))
        # A name with spaces is suggested display names too; a part number only part numbers.
        candidates = self._user_names() if " " in _display(text) else self._user_part_numbers()
        hint = did_you_mean(_display(text), candidates)
        if not hint:
            hint = f"; subscribed: {_listing(self._user_part_numbers()) or 'none'}"
        if key in self._known_parts:
            product = next(p for p in self._names.products if normalize_name(p.part_number) == key)
            return (f'unknown license "{shown}": Microsoft\'s part number for {product.name}, which the tenant does '
                    f"not subscribe to{hint}")
        return f'unknown license "{shown}": no subscribed SKU has this skuPartNumber{hint}'

    def _by_prefixed(self, text: str) -> Sku | None:
        """The SKU of an `account:PARTNUMBER` name, the account checked; None if `text` has no such prefix."""
        match = _ACCOUNT_PREFIX_RE.fullmatch(text)
        if match is None or is_guid(normalize_name(text)):
            return None
        account, rest = match.group(1), match.group(2)
        if not self.account_names:
            raise UnknownName(
                f'license "{_show(_display(text))}" names the account "{account}", which cannot be checked: the '
                f"tenant's subscribedSkus report no accountName; write the license without \"{account}:\""
            )
        if account.lower() not in {a.lower() for a in self.account_names}:
            raise UnknownName(
                f'license "{_show(_display(text))}" belongs to the account "{account}", but this tenant\'s account is '
                f'"{self.account_names[0]}": the file may be meant for another tenant; check ?tenant=, or write the '
                f'license without "{account}:"'
            )
        return self.resolve_sku(rest)

    def _by_display_name(self, text: str) -> Sku | None:
        """The subscribed SKU Microsoft's table names `text`; UnknownName when it names none or several."""
        products = self._names.named(text)
        if not products:
            return None
        ids = list(dict.fromkeys(p.sku_id for p in products))
        subscribed = [self._by_id[i] for i in ids if i in self._by_id]
        shown = _show(_display(text))
        if len(subscribed) == 1:
            return subscribed[0]
        parts = [p.part_number for p in products]
        if subscribed:
            raise UnknownName(
                f'license "{shown}" is ambiguous: Microsoft\'s table gives this name to '
                f"{_listing([s.part_number for s in subscribed])}, all subscribed in the tenant; "
                "write the skuPartNumber instead"
            )
        hint = did_you_mean(_display(text), self._user_names()) or (
            f"; subscribed: {_listing(self._user_part_numbers()) or 'none'}")
        which = " or ".join(parts) if len(parts) <= 3 else _listing(parts)
        raise UnknownName(
            f'unknown license "{shown}": Microsoft\'s name for {which}, which the tenant does not subscribe to{hint}'
        )

    def _is_known(self, text: str) -> bool:
        """Whether `text` is a name of some license: subscribed or in Microsoft's table (for splitting at "+")."""
        key = normalize_name(text)
        if not key:
            return False
        if is_guid(key):
            return key.lower() in self._by_id or bool(self._names.names_of(key))
        if key in self._by_part or key in self._known_parts or self._names.is_name(text):
            return True
        match = _ACCOUNT_PREFIX_RE.fullmatch(text)
        return match is not None and self._is_known(match.group(2))

    def split_joined(self, text: str) -> list[str]:
        """The license names in `text`, which may join several with "+" (admin center exports do).

        A "+" separates only where every piece is a known name: some names contain " + "
        ("Enterprise Mobility + Security E5"). Two readings that both work are refused; with
        no full reading, the one with fewest unknown pieces is returned (they fail to resolve,
        each with its own message).
        """
        if JOIN not in text:
            return [text]
        pieces = text.split(JOIN)
        if len(pieces) > _MAX_JOINED_PIECES:
            return list(pieces)
        readings = self._readings(pieces)
        complete = [r for r in readings if all(self._is_known(part) for part in r)]
        if len(complete) > 1:
            shown = " | ".join(" + ".join(_display(p) for p in r) for r in complete[:3])
            raise UnknownName(
                f'"{_show(_display(text))}" reads as licenses in more than one way ({shown}); separate them with ";"'
            )
        if complete:
            return [p.strip() for p in complete[0]]
        best = min(readings, key=lambda r: (sum(not self._is_known(p) for p in r), -sum(self._is_known(p) for p in r)))
        return [p.strip() for p in best]

    def _readings(self, pieces: Sequence[str]) -> list[list[str]]:
        """Every way to group consecutive pieces (rejoined with "+") into names; at most a few hundred."""
        out: list[list[str]] = []

        def extend(start: int, prefix: list[str]) -> None:
            if start == len(pieces):
                out.append(prefix)
                return
            for end in range(start + 1, len(pieces) + 1):
                part = JOIN.join(pieces[start:end])
                if end < len(pieces) and not self._is_known(part) and end - start > 1:
                    continue  # a longer unknown run is never better than a shorter one
                extend(end, [*prefix, part])
                if len(out) > 256:
                    return

        extend(0, [])
        return out

    def names_license(self, text: str) -> str | None:
        """The part number of a subscribed license a cell names (alone or in a list), or None: for unused columns."""
        for item in re.split(r"[;|]", text):
            if not item.strip():
                continue
            try:
                names = self.split_joined(item)
            except UnknownName:
                continue
            for name in names:
                sku = self._subscribed(name)
                if sku is not None:
                    return sku.part_number
        return None

    def _subscribed(self, text: str) -> Sku | None:
        """The subscribed user SKU `text` names in any accepted form, or None (building no message: asked often)."""
        key = normalize_name(text)
        if not key:
            return None
        if is_guid(key):
            sku = self._by_id.get(key.lower())
        else:
            sku = self._by_part.get(key)
            match = _ACCOUNT_PREFIX_RE.fullmatch(text) if sku is None else None
            if match is not None and match.group(1).lower() in {a.lower() for a in self.account_names}:
                return self._subscribed(match.group(2))
            if sku is None:
                ids = {p.sku_id for p in self._names.named(text)}
                found = [self._by_id[i] for i in ids if i in self._by_id]
                sku = found[0] if len(found) == 1 else None
        return sku if sku is not None and sku.applies_to.lower() == "user" else None

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
