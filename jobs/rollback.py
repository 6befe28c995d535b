"""A job's way back: for each user it changed, the operation that returns the user to its `before` state.

Built from the job's stored results, never from its input: only users that ended `succeeded` with
an `after` state were changed, and `before` says what they held. Each operation carries the `after`
state as what the user must still be in (jobs.plan checks it: a user changed since is left alone,
`drifted`). Removals go before re-adds, so that a swap back never needs a seat the job has not freed.
Only direct assignments are put back (as direct ones, even where a group also gives the license):
group assignments are left to the groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum

from jobs.models import Assignment, ExpectedState, License, Operation, UserResult, UserStatus
from jobs.plan import UserState, plan_name
from jobs.skus import SkuCatalog

Rows = Callable[[], Iterable[tuple[Operation, UserResult | None]]]

LOCATION_KEPT = ("usage location {location} kept: Graph cannot clear a usage location, and the user had none "
                 "before the job")


class SeatOrder(IntEnum):
    """When a rollback's operation runs within the job: those that free seats or need none come first."""

    NO_SEAT = 0  # removals only, disabled plans or the usage location restored
    SWAP = 1  # removes licenses and re-adds others in one call
    READD = 2  # only re-adds: the seats the earlier groups freed are there for it


def undo(op: Operation, result: UserResult | None, catalog: SkuCatalog) -> Operation | None:
    """The operation that takes one user back to its `before` state; None if the job did not change it."""
    if result is None or result.status is not UserStatus.SUCCEEDED or result.before is None or result.after is None:
        return None
    before, after = UserState.from_json(result.before), UserState.from_json(result.after)
    if before.same_as(after):
        return None
    # Direct assignments only: group assignments were never the job's to change, and are not the rollback's.
    old, new = before.direct(), after.direct()
    add = tuple(License(sku, plans) for sku, plans in old.items() if new.get(sku) != plans)
    remove = tuple(sku for sku in new if sku not in old)
    location, note = None, None
    if after.usage_location != before.usage_location:
        if before.usage_location:
            location = before.usage_location
        else:
            note = LOCATION_KEPT.format(location=after.usage_location)
    return Operation(
        row=op.row, user=op.user, add=add, remove=remove, usage_location=location, extra=op.extra,
        source=_source(add, remove, location, catalog),
        expect=ExpectedState(after.licenses, after.usage_location, after.user_id or before.user_id),
        location_last=location is not None, note=note, assignment=Assignment.DIRECT,
    )


def seat_order(op: Operation) -> SeatOrder:
    """Where a rollback operation goes in its job (see SeatOrder)."""
    if not _seats_needed(op):
        return SeatOrder.NO_SEAT
    return SeatOrder.SWAP if op.remove else SeatOrder.READD


def rollback_operations(rows: Rows, catalog: SkuCatalog) -> Iterator[Operation]:
    """The rollback of every changed user of `rows()`, in SeatOrder.

    One pass yields the operations that need no seat and counts the others; a group of those gets a
    pass of its own only when there is one, so a job that only added (or only removed) is read at
    most twice, and nothing but counts is held between passes.
    """
    later: Counter[SeatOrder] = Counter()
    for op, result in rows():
        back = undo(op, result, catalog)
        if back is None:
            continue
        group = seat_order(back)
        if group is SeatOrder.NO_SEAT:
            yield back
        else:
            later[group] += 1
    for group in (SeatOrder.SWAP, SeatOrder.READD):
        if not later[group]:
            continue
        for op, result in rows():
            back = undo(op, result, catalog)
            if back is not None and seat_order(back) is group:
                yield back


class SeatDemand:
    """Seats a rollback needs per SKU, net of those it frees itself (it removes before it re-adds)."""

    def __init__(self) -> None:
        self._net: Counter[str] = Counter()

    def count(self, ops: Iterable[Operation]) -> Iterator[Operation]:
        """Pass the operations through, counting what each needs and frees."""
        for op in ops:
            self._net.update(_seats_needed(op))
            self._net.subtract(sku.lower() for sku in op.remove)
            yield op

    def net(self) -> dict[str, int]:
        """SKU → seats to reserve (only the positive ones)."""
        return {sku: n for sku, n in self._net.items() if n > 0}


def _seats_needed(op: Operation) -> list[str]:
    """SKUs the operation adds that the user does not hold in the expected state (each takes a seat)."""
    held = {lic.sku_id.lower() for lic in op.expect.licenses} if op.expect else set()
    return [a.sku_id.lower() for a in op.add if a.sku_id.lower() not in held]


def _source(add: tuple[License, ...], remove: tuple[str, ...], location: str | None,
            catalog: SkuCatalog) -> tuple[tuple[str, str], ...]:
    """The operation as a CSV row would say it (part numbers, plan names), shown in the results."""
    plans = dict.fromkeys(plan_name(catalog, a.sku_id, p) for a in add for p in a.disabled_plans)
    source = (("add", ";".join(catalog.part_number(a.sku_id) for a in add)),
              ("remove", ";".join(catalog.part_number(sku) for sku in remove)),
              ("disabled_plans", ";".join(plans)),
              ("usage_location", location or ""))
    return tuple((k, v) for k, v in source if v)
