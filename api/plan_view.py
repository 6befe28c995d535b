"""A job as the API shows it: its progress JSON with the plan's seat table (free seats from Graph and the ledger)."""

from __future__ import annotations

import time
from typing import Any

from api.context import ApiContext
from jobs.catalogs import CatalogUnavailable
from jobs.progress import JobProgress
from jobs.schedule import seats_by_day
from jobs.seats import seat_table, with_seats
from jobs.skus import SkuCatalog


def known_catalog(context: ApiContext, tenant: str) -> SkuCatalog | None:
    """The tenant's SKU catalog, or None when Graph cannot be asked right now (ids are shown instead)."""
    try:
        return context.catalogs.get(tenant)
    except (CatalogUnavailable, KeyError):
        return None


def job_json(progress: JobProgress, context: ApiContext) -> dict[str, Any]:
    """The job JSON with `plan.seats`: per SKU needed, released, free (minus other jobs' reservations), shortfall.

    `seats` is null when Graph cannot be asked right now; the rest of the plan stands.
    """
    lines = None
    if progress.plan is not None:
        lines = seat_table(progress.plan, known_catalog(context, progress.tenant),
                           lambda: context.seats.held_by_others(progress.tenant, progress.id))
    job = with_seats(progress.to_json(), lines)
    if progress.schedule:
        job["seats_by_day"] = _seats_by_day(progress, context)
    return job


def _seats_by_day(progress: JobProgress, context: ApiContext) -> list[dict[str, object]] | None:
    """The seat table by date: every day of a dry run, the days still ahead of a real job (None: Graph unknown)."""
    record = context.store.job(progress.id)
    catalog = known_catalog(context, progress.tenant)
    if record is None or catalog is None:
        return None
    now = time.time()
    schedule = record.spec.schedule
    counters = context.store.plan_counters(progress.id)
    if record.spec.plans_only and counters.planned >= record.total:  # what the plan found, not what the input asks
        schedule = counters.planned_days(schedule)
    days = [d for d in schedule if progress.dry_run or (d.due_at is not None and d.due_at > now)]
    others = context.seats.held_by_others(progress.tenant, progress.id)
    return [line.to_json() for line in seats_by_day(days, catalog, others)]
