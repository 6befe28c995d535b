"""Rows on their day: when each row is due, the job's days, and its seats by date.

A row with an effective date still ahead is held: at submission its job's rows are ordered so
that those due now come first (staged as they stream in) and the held ones follow, grouped by the
instant they are due, each group in chunks of its own (`JobStore.stage` cuts a chunk where the due
time changes). A real job's held chunks wait in the due set (jobs.due) for their instant, and each
then runs like any chunk: it reads its users first, so a user changed since submission is planned
again. A dry run plans every row now and shows them per day.

A date is a day in the tenant profile's time zone: a joiner's (`effective_date`) rows run at its
start, a leaver's (`end_date`, removals only) at its end, the start of the next day.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from jobs.input.dates import parse_when
from jobs.input.errors import MAX_KEPT_ERRORS
from jobs.models import FieldError, Operation, iso_time
from jobs.skus import SkuCatalog

# A held row that runs more than this after its instant is reported late (workers were not running).
LATE_AFTER_S = 60.0
# Instants one job may hold rows for: each has chunks of its own and a line in the job record, which
# every chunk reads (a year of days; date-times to the second would make a chunk per row).
MAX_INSTANTS = 400
# Instants an audit event lists (its details are a few kilobytes at most); the rest are counted.
MAX_AUDITED_INSTANTS = 20


def due_at(op: Operation, zone: ZoneInfo) -> float | None:
    """The instant (epoch seconds) the row is due, None for a row without a date; infinity past the calendar."""
    if not op.effective:
        return None
    value = parse_when(op.effective)
    if isinstance(value, datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=zone)).timestamp()
    try:
        day: date = value + timedelta(days=1) if op.last_day else value
    except OverflowError:  # a last day of 9999-12-31 (HR's "no end"): its end is past any calendar
        return math.inf
    return datetime.combine(day, time(), tzinfo=zone).timestamp()


def late_by_s(op: Operation, now: float) -> float | None:
    """How late a held row runs at `now`, when it is late; None when it is on time or was never held."""
    if op.due_at is None or now - op.due_at <= LATE_AFTER_S:
        return None
    return round(now - op.due_at, 1)


@dataclass(frozen=True)
class Day:
    """The rows of a job due at one instant (None: at submission), their chunks, and the seats they add and free."""

    due_at: float | None
    first_chunk: int
    chunks: int
    rows: int
    adds: Mapping[str, int] = field(default_factory=dict)  # skuId -> rows adding it
    releases: Mapping[str, int] = field(default_factory=dict)  # skuId -> rows removing it

    def to_json(self) -> list[object]:
        """The stored form."""
        return [self.due_at, self.first_chunk, self.chunks, self.rows, dict(self.adds), dict(self.releases)]

    @classmethod
    def from_json(cls, raw: Sequence[object]) -> Day:
        """Inverse of `to_json`."""
        due, first, chunks, rows, adds, releases = raw
        return cls(None if due is None else float(str(due)), int(str(first)), int(str(chunks)), int(str(rows)),
                   dict(adds) if isinstance(adds, dict) else {}, dict(releases) if isinstance(releases, dict) else {})

    def view(self) -> dict[str, object]:
        """The API's shape of one day."""
        return {"at": None if self.due_at is None else iso_time(self.due_at), "rows": self.rows,
                "chunks": list(range(self.first_chunk, self.first_chunk + self.chunks))}


def held_summary(days: Sequence[Day]) -> dict[str, object]:
    """What the audit trail keeps of the rows a job holds for their day: how many, and per instant (the first few)."""
    held = [d for d in days if d.due_at is not None]
    if not held:
        return {}
    shown = [{"at": iso_time(d.due_at), "rows": d.rows} for d in held[:MAX_AUDITED_INSTANTS] if d.due_at is not None]
    more = len(held) - len(shown)
    return {"scheduled_rows": sum(d.rows for d in held), "scheduled_days": shown,
            **({"scheduled_days_left_out": more} if more else {})}


def dump_days(days: Sequence[Day]) -> str:
    """The job hash's `schedule` field."""
    return json.dumps([d.to_json() for d in days], separators=(",", ":"))


def load_days(raw: str | None) -> tuple[Day, ...]:
    """Inverse of `dump_days`."""
    return tuple(Day.from_json(d) for d in json.loads(raw)) if raw else ()


def held_from(days: Sequence[Day]) -> int | None:
    """The first chunk held for a later instant (chunks from it on wait in the due set), None when none is."""
    held = [d.first_chunk for d in days if d.due_at is not None]
    return min(held) if held else None


def rows_ahead(days: Sequence[Day], now: float) -> int:
    """Rows of the job still waiting for their instant at `now`."""
    return sum(d.rows for d in days if d.due_at is not None and d.due_at > now)


class Holder:
    """Orders a submission's operations by when they are due, counting rows and seats per instant.

    Rows due now (no date, or a date reached) are passed on as they come; rows due later are held
    back and follow, by instant. A date further ahead than `horizon_s` is an error (the job and its
    results are kept for a limited time).
    """

    def __init__(self, zone: ZoneInfo, now: float, horizon_s: float) -> None:
        self.zone = zone
        self.now = now
        self.horizon_s = horizon_s
        self.errors: list[FieldError] = []  # the first MAX_KEPT_ERRORS of `error_count`
        self.error_count = 0
        self._rows: Counter[float | None] = Counter()
        self._adds: dict[float | None, Counter[str]] = {}
        self._releases: dict[float | None, Counter[str]] = {}

    def order(self, operations: Iterable[Operation]) -> Iterator[Operation]:
        """The operations, those due now first; each held one carries its `due_at`."""
        held: dict[float, list[str]] = {}  # kept serialized: less than half the memory of the objects
        for op in operations:
            due = self._due(op)
            self._count(due, op)
            if due is None:
                yield replace(op, due_at=None) if op.due_at is not None else op
            else:
                held.setdefault(due, []).append(replace(op, due_at=due).dumps())
        for due in sorted(held):
            for raw in held.pop(due):
                yield Operation.from_json(json.loads(raw))

    def _due(self, op: Operation) -> float | None:
        """When the row is held until, None when it is due now; an error noted for a date too far ahead."""
        due = due_at(op, self.zone)
        if due is None or due <= self.now:
            return None
        column = "end_date" if op.last_day else "effective_date"
        if due - self.now > self.horizon_s:
            self._error(FieldError(
                f"the date is more than {self.horizon_s / 86400:.0f} days ahead: this server keeps a job that long "
                "(retention_days); submit it nearer the day", row=op.row, column=column, value=op.effective))
        elif due not in self._rows and len(self._rows) - (None in self._rows) >= MAX_INSTANTS:
            self._error(FieldError(
                f"the job's rows are due at more than {MAX_INSTANTS} different instants: give days rather than times "
                "to the second, or split the file", row=op.row, column=column, value=op.effective))
            return None  # not counted as an instant of its own: the next rows are checked the same way
        return due

    def _error(self, error: FieldError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(error)

    def _count(self, due: float | None, op: Operation) -> None:
        self._rows[due] += 1
        adds = self._adds.setdefault(due, Counter())
        for lic in op.add:
            adds[lic.sku_id.lower()] += 1
        releases = self._releases.setdefault(due, Counter())
        for sku in op.remove:
            releases[sku.lower()] += 1

    def days(self, cuts: Sequence[tuple[float | None, int, int]]) -> tuple[Day, ...]:
        """The job's days from the chunks staging cut, `(due_at, first chunk, chunks)` per instant."""
        return tuple(Day(due, first, chunks, self._rows[due], dict(self._adds.get(due, {})),
                         dict(self._releases.get(due, {}))) for due, first, chunks in cuts)

    def held(self) -> bool:
        """Whether some row is held for later."""
        return any(due is not None for due in self._rows)


def peak_demand(days: Sequence[Day]) -> dict[str, int]:
    """Seats per SKU the job needs at its busiest instant: adds up to it minus what its earlier leavers free."""
    peak: Counter[str] = Counter()
    added: Counter[str] = Counter()
    freed: Counter[str] = Counter()
    for day in _in_order(days):
        added.update(day.adds)
        for sku in day.adds:
            peak[sku] = max(peak[sku], added[sku] - freed[sku])
        freed.update(day.releases)
    return {sku: n for sku, n in peak.items() if n > 0}


@dataclass(frozen=True)
class DaySeats:
    """One SKU on one day: the seats the day's rows add and free, what is free before them, and what is short."""

    due_at: float | None
    sku_id: str
    sku: str
    adds: int
    releases: int
    free: int
    shortfall: int

    def to_json(self) -> dict[str, object]:
        """The API's shape."""
        return {"at": None if self.due_at is None else iso_time(self.due_at), "sku_id": self.sku_id, "sku": self.sku,
                "adds": self.adds, "releases": self.releases, "free": self.free, "shortfall": self.shortfall}


def seats_by_day(days: Sequence[Day], catalog: SkuCatalog, others: Mapping[str, int]) -> list[DaySeats]:
    """The seat table by date: for each day and SKU, the seats free before the day's rows.

    Free is Graph's free seats now, minus the tenant's other jobs' reservations, minus what this job's
    earlier days add, plus what its earlier leavers free (counted as freed at their end of day).
    """
    lines: list[DaySeats] = []
    skus = sorted({sku for d in days for sku in (*d.adds, *d.releases)})
    for sku_id in skus:
        sku = catalog.get(sku_id)
        free = (sku.enabled_units - sku.consumed_units if sku else 0) - others.get(sku_id, 0)
        for day in _in_order(days):
            adds, releases = day.adds.get(sku_id, 0), day.releases.get(sku_id, 0)
            if adds or releases:
                lines.append(DaySeats(day.due_at, sku_id, catalog.part_number(sku_id), adds, releases, free,
                                      max(0, adds - max(free, 0))))
            free += releases - adds
    return sorted(lines, key=lambda line: (line.due_at or 0.0, line.sku))


def _in_order(days: Sequence[Day]) -> list[Day]:
    """The days, the one due at submission first."""
    return sorted(days, key=lambda d: -1.0 if d.due_at is None else d.due_at)
