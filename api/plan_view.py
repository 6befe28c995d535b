"""The seat table of a job's plan: needs from the plan counters, free seats from Graph and the ledger."""

from __future__ import annotations

from typing import Any

from api.context import ApiContext
from jobs.catalogs import CatalogUnavailable
from jobs.seats import SeatLine
from jobs.skus import SkuCatalog


def known_catalog(context: ApiContext, tenant: str) -> SkuCatalog | None:
    """The tenant's SKU catalog, or None when Graph cannot be asked right now (ids are shown instead)."""
    try:
        return context.catalogs.get(tenant)
    except (CatalogUnavailable, KeyError):
        return None


def with_seats(job: dict[str, Any], context: ApiContext, tenant: str) -> dict[str, Any]:
    """The job JSON with `plan.seats`: per SKU needed, released, free (minus other jobs' reservations), shortfall."""
    plan = job.get("plan")
    if not plan:
        return job
    needed: dict[str, int] = plan.pop("needed", {})
    released: dict[str, int] = plan.pop("released", {})
    skus = sorted(set(needed) | set(released))
    if not skus:
        plan["seats"] = []
        return job
    catalog = known_catalog(context, tenant)
    if catalog is None:
        plan["seats"] = None  # unknown right now; the rest of the plan stands
        return job
    others = context.seats.held_by_others(tenant, job["id"])
    lines = []
    for sku in skus:
        sku_info = catalog.get(sku)
        free = (sku_info.enabled_units - sku_info.consumed_units if sku_info else 0) - others.get(sku, 0)
        need, back = needed.get(sku, 0), released.get(sku, 0)
        lines.append(SeatLine(sku_id=sku, sku=catalog.part_number(sku), needed=need, released=back, free=free,
                              shortfall=max(0, need - back - max(free, 0))).to_json())
    plan["seats"] = lines
    return job
