"""A job's per-user results as streamed JSON or as a resubmittable CSV with formula cells defused."""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from jobs.models import FORMULA_START, SOURCE_COLUMNS, GroupLink, Operation, UserResult, UserStatus, iso_time
from jobs.skus import SkuCatalog
from jobs.store import JobStore

RESULT_COLUMNS = ("status", "reason", "graph_code", "graph_message", "http_status", "attempts", "updated_at",
                  "detail", "action", "before", "after", "warnings", "note", "groups")
CSV_COLUMNS = ("row", "user", *SOURCE_COLUMNS, *RESULT_COLUMNS)
# A dated row's date as written, under the column it was read from: the results resubmit on the same day.
DATE_COLUMNS = ("effective_date", "end_date")
# The status a user without a terminal result yet shows in the results; every status one can filter on.
PENDING = "pending"
# A pending row held for its effective date, until its instant.
SCHEDULED = "scheduled"
RESULT_STATUSES = (*(s.value for s in UserStatus), PENDING, SCHEDULED)

Row = tuple[Operation, UserResult | None]
# A download is sent in pieces of about this size: each piece of a streamed body costs the server a
# hand-over to a thread, too dear to pay per row on a file of a million of them.
STREAM_BLOCK_BYTES = 64 * 1024


def result_rows(store: JobStore, job_id: str, status: str | None) -> Iterator[Row]:
    """A job's operations with their results (None while pending), only those in `status` if given."""
    now = time.time()
    for op, res in store.iter_results(job_id):
        current = res.status.value if res is not None else _waiting(op, now)
        if status is None or status == current:
            yield op, res


class Page:
    """A window of rows (`offset`, then at most `limit`), noting whether more follow."""

    def __init__(self, rows: Iterator[Row], offset: int = 0, limit: int | None = None) -> None:
        self._rows = itertools.islice(rows, offset, None)
        self.limit = limit
        self.offset = offset
        self.more = False

    def __iter__(self) -> Iterator[Row]:
        if self.limit is None:
            yield from self._rows
            return
        yield from itertools.islice(self._rows, self.limit)
        self.more = next(self._rows, None) is not None

    @property
    def next_offset(self) -> int | None:
        """Where the next page starts (None: this was the last one); known once the page was iterated."""
        return self.offset + (self.limit or 0) if self.more else None


def json_lines(rows: Iterable[Row], catalog: SkuCatalog | None = None) -> Iterator[bytes]:
    """`{"value": [...]}`, one row at a time; each row carries its input's other columns as `extra`.

    `before`/`after` list licenses by skuId with their part number (`sku`) and disabled plan
    names alongside, when the tenant's catalog is known. A `Page` with a limit adds `next_offset`.
    """
    yield b'{"value":['
    first = True
    for op, res in rows:
        item = _row_dict(op, res)
        item["before"] = _named_state(res.before if res else None, catalog)
        item["after"] = _named_state(res.after if res else None, catalog)
        item["warnings"] = list(res.warnings) if res else []
        item["groups"] = [{**g.to_json(), "sku": _part(catalog, g.sku_id)} for g in res.groups] if res else []
        item["extra"] = dict(op.extra)
        if op.due_at is not None:  # a row held for its effective date: when it was due, how late it ran
            item["scheduled_for"] = iso_time(op.due_at)
            item["late_s"] = res.late_s if res else None
        yield (b"" if first else b",") + json.dumps(item).encode()
        first = False
    if isinstance(rows, Page) and rows.limit is not None:
        yield b'],"next_offset":' + json.dumps(rows.next_offset).encode() + b"}"
        return
    yield b"]}"


def csv_lines(rows: Iterable[Row], catalog: SkuCatalog | None = None,
              kept_columns: Sequence[str] | None = None, *, dated: bool = False) -> Iterator[bytes]:
    """A CSV, one line at a time: the result columns then the input's other columns, cells defused.

    `before`/`after` read like `ENTERPRISEPACK (SWAY off); EMS | US`: licenses, then the usage location.
    The other columns are `kept_columns` (the job's, stored once: a row keeps only its non-empty
    cells), else those of the first row. A job with `dated` rows adds their date columns.
    """
    header: list[str] | None = None
    buf = io.StringIO()
    writer = csv.writer(buf)
    for op, res in rows:
        item = _row_dict(op, res)
        item["before"] = _state_text(res.before if res else None, catalog)
        item["after"] = _state_text(res.after if res else None, catalog)
        item["warnings"] = "; ".join(res.warnings) if res else ""
        item["groups"] = _groups_text(res.groups, catalog) if res else ""
        if header is None:
            extra = kept_columns if kept_columns is not None else [name for name, _ in op.extra]
            fixed = (*CSV_COLUMNS, *(DATE_COLUMNS if dated else ()))
            header = [*fixed, *(name for name in extra if name not in fixed)]
            writer.writerow(header)
        writer.writerow([neutralise("" if item.get(col) is None else str(item.get(col))) for col in header])
        yield buf.getvalue().encode("utf-8")
        buf.seek(0)
        buf.truncate()
    if header is None:
        writer.writerow(CSV_COLUMNS)
        yield buf.getvalue().encode("utf-8")


def blocks(lines: Iterable[bytes], size_bytes: int = STREAM_BLOCK_BYTES) -> Iterator[bytes]:
    """The same bytes as `lines`, joined into pieces of at least `size_bytes` (the last may be shorter)."""
    piece: list[bytes] = []
    held = 0
    for line in lines:
        piece.append(line)
        held += len(line)
        if held >= size_bytes:
            yield b"".join(piece)
            piece, held = [], 0
    if piece:
        yield b"".join(piece)


def neutralise(cell: str) -> str:
    """Defuse a CSV cell a spreadsheet would run as a formula."""
    if cell and cell[0] in FORMULA_START:
        return "'" + cell
    return cell


def _waiting(op: Operation, now: float) -> str:
    """The status of a row without a result: scheduled until its instant, then pending."""
    return SCHEDULED if op.due_at is not None and op.due_at > now else PENDING


def _row_dict(op: Operation, res: UserResult | None) -> dict[str, Any]:
    source = dict(op.source)
    out: dict[str, Any] = {
        "row": op.row,
        "user": op.user,
        **{col: source.get(col, "") for col in SOURCE_COLUMNS},
        "status": res.status.value if res else _waiting(op, time.time()),
        "reason": res.reason if res else None,
        "graph_code": res.graph_code if res else None,
        "graph_message": res.graph_message if res else None,
        "http_status": res.http_status if res else None,
        "attempts": res.attempts if res else 0,
        "updated_at": iso_time(res.updated_at) if res else None,
        "detail": res.detail if res else None,
        "action": res.action if res else None,
        "note": res.note.value if res and res.note else None,
    }
    if op.effective:
        out[DATE_COLUMNS[1] if op.last_day else DATE_COLUMNS[0]] = op.effective
    for name, value in op.extra:
        out.setdefault(name, value)
    return out


def _named_state(state: dict[str, Any] | None, catalog: SkuCatalog | None) -> dict[str, Any] | None:
    """A stored user state with part numbers and disabled plan names beside the ids."""
    if state is None:
        return None
    licenses = []
    for lic in state.get("assignedLicenses") or ():
        sku_id, plans = str(lic.get("skuId", "")), list(lic.get("disabledPlans") or ())
        licenses.append({"skuId": sku_id, "disabledPlans": plans, "sku": _part(catalog, sku_id),
                         "disabledPlanNames": [_plan(catalog, sku_id, p) for p in plans]})
    return {**state, "assignedLicenses": licenses}


def _state_text(state: dict[str, Any] | None, catalog: SkuCatalog | None) -> str:
    if state is None:
        return ""
    parts = []
    for lic in state.get("assignedLicenses") or ():
        sku_id, plans = str(lic.get("skuId", "")), list(lic.get("disabledPlans") or ())
        names = ", ".join(_plan(catalog, sku_id, p) for p in plans)
        parts.append(f"{_part(catalog, sku_id)} ({names} off)" if names else _part(catalog, sku_id))
    return f"{'; '.join(parts) or '(no licenses)'} | {state.get('usageLocation') or '(no location)'}"


def _groups_text(groups: Sequence[GroupLink], catalog: SkuCatalog | None) -> str:
    """`ENTERPRISEPACK via Sales E3 (0a0a...)`: each inherited license with its group's name and id."""
    return "; ".join(f"{_part(catalog, g.sku_id)} via {g.group_name} ({g.group_id})" if g.group_name
                     else f"{_part(catalog, g.sku_id)} via group {g.group_id}" for g in groups)


def _part(catalog: SkuCatalog | None, sku_id: str) -> str:
    return catalog.part_number(sku_id) if catalog else sku_id


def _plan(catalog: SkuCatalog | None, sku_id: str, plan_id: str) -> str:
    sku = catalog.get(sku_id) if catalog else None
    return next((p.name for p in sku.plans if p.plan_id == plan_id.lower()), plan_id) if sku else plan_id
