"""The one set of license rules: names to add, remove and disable, resolved against the tenant's SKUs.

CSV rows and JSON operations both come here, so a name is accepted or refused the same way in either.
A license or plan named twice in one list is refused, not silently merged: a tool that writes to a
tenant should not guess what a repeated name meant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jobs.input.rules import Wording
from jobs.models import FieldError, License
from jobs.skus import Sku, SkuCatalog, UnknownName


@dataclass(frozen=True)
class Name:
    """A license or service plan name as written, with the column (CSV) or path (JSON) it came from."""

    text: str
    column: str


@dataclass(frozen=True)
class AddName:
    """A license to add as written, with plans to disable in this license alone (JSON's disabledPlans)."""

    name: Name
    plans: tuple[Name, ...] = ()


@dataclass(frozen=True)
class Licenses:
    """The license part of one row or operation, resolved; its errors carry no row (the caller has it)."""

    add: tuple[License, ...] = ()
    remove: tuple[str, ...] = ()
    errors: tuple[FieldError, ...] = ()


def resolve_licenses(
    catalog: SkuCatalog,
    wording: Wording,
    adds: Sequence[AddName],
    removes: Sequence[Name],
    plans_for_all: Sequence[Name] = (),
) -> Licenses:
    """Resolve one row's or operation's names; `plans_for_all` are disabled in every added SKU holding them."""
    return _Resolver(catalog, wording).resolve(adds, removes, plans_for_all)


class _Resolver:
    """The resolution of one row or operation, collecting its errors."""

    def __init__(self, catalog: SkuCatalog, wording: Wording) -> None:
        self._catalog = catalog
        self._wording = wording
        self._errors: list[FieldError] = []
        self._added: list[Sku] = []
        self._disabled: dict[str, list[str]] = {}  # skuId → servicePlanIds, in the order named

    def resolve(self, adds: Sequence[AddName], removes: Sequence[Name], plans_for_all: Sequence[Name]) -> Licenses:
        """The resolved licenses and every error found."""
        self._add(adds)
        add_failed = bool(self._errors)
        removed = self._remove(removes)
        if plans_for_all and not adds:
            wording = self._wording
            self._error(
                f"{wording.disabled_plans} needs licenses in {wording.add}: plans can only be disabled in SKUs "
                f"this {wording.unit} adds",
                Name(";".join(n.text.strip() for n in plans_for_all), plans_for_all[0].column),
            )
        elif plans_for_all and not add_failed:
            # Checked only against a fully resolved add list: with a license missing, a plan of that
            # license would be reported as "not in any added SKU", which is misleading.
            self._disable(plans_for_all, self._added)
        return Licenses(
            add=tuple(License(s.sku_id, tuple(self._disabled[s.sku_id])) for s in self._added),
            remove=tuple(removed),
            errors=tuple(self._errors),
        )

    def _error(self, message: str, name: Name) -> None:
        self._errors.append(FieldError(message, None, name.column, name.text.strip()))

    def _sku(self, name: Name) -> Sku | None:
        try:
            return self._catalog.resolve_sku(name.text)
        except UnknownName as exc:
            self._error(exc.message, name)
            return None

    def _twice(self, what: str, shown: str, listed_in: str, name: Name) -> None:
        self._error(f"{what} {shown} is listed twice in {listed_in}; list it once", name)

    def _add(self, adds: Sequence[AddName]) -> None:
        for item in adds:
            sku = self._sku(item.name)
            if sku is None:
                continue
            if sku.sku_id in self._disabled:
                self._twice("license", sku.part_number, self._wording.add, item.name)
                continue
            self._added.append(sku)
            self._disabled[sku.sku_id] = []
            self._disable(item.plans, [sku])

    def _remove(self, removes: Sequence[Name]) -> list[str]:
        removed: list[str] = []
        listed: set[str] = set()
        for name in removes:
            sku = self._sku(name)
            if sku is None:
                continue
            if sku.sku_id in listed:
                self._twice("license", sku.part_number, self._wording.remove, name)
                continue
            listed.add(sku.sku_id)
            if sku.sku_id in self._disabled:
                self._error(
                    f"license {sku.part_number} is both added and removed in this {self._wording.unit}; keep it "
                    f"in one {self._wording.container} only",
                    name,
                )
                continue
            removed.append(sku.sku_id)
        return removed

    def _disable(self, names: Sequence[Name], skus: Sequence[Sku]) -> None:
        """Disable each named plan in those of `skus` that hold it."""
        listed: set[tuple[str, str]] = set()
        for name in names:
            try:
                hits = self._catalog.resolve_plan(name.text, skus)
            except UnknownName as exc:
                self._error(exc.message, name)
                continue
            if listed.issuperset(hits):
                self._twice("service plan", self._catalog.plan_name(hits[0][1]), self._wording.disabled_plans, name)
                continue
            listed.update(hits)
            for sku_id, plan_id in hits:
                if plan_id not in self._disabled[sku_id]:
                    self._disabled[sku_id].append(plan_id)
