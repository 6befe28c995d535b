"""A job's per-user results as streamed JSON or as a resubmittable CSV with formula cells defused."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from jobs.models import FORMULA_START, SOURCE_COLUMNS, Operation, UserResult, iso_time
from jobs.store import JobStore

RESULT_COLUMNS = ("status", "reason", "graph_code", "graph_message", "http_status", "attempts", "updated_at",
                  "detail")
CSV_COLUMNS = ("row", "user", *SOURCE_COLUMNS, *RESULT_COLUMNS)

Row = tuple[Operation, UserResult | None]


def result_rows(store: JobStore, job_id: str, status: str | None) -> Iterator[Row]:
    """A job's operations with their results (None while pending), only those in `status` if given."""
    for op, res in store.iter_results(job_id):
        current = res.status.value if res is not None else "pending"
        if status is None or status == current:
            yield op, res


def json_lines(rows: Iterator[Row]) -> Iterator[bytes]:
    """`{"value": [...]}`, one row at a time; each row carries its input's other columns as `extra`."""
    yield b'{"value":['
    first = True
    for op, res in rows:
        item = _row_dict(op, res)
        item["extra"] = dict(op.extra)
        yield (b"" if first else b",") + json.dumps(item).encode()
        first = False
    yield b"]}"


def csv_lines(rows: Iterator[Row]) -> Iterator[bytes]:
    """A CSV, one line at a time: the result columns then the input's other columns, cells defused."""
    header: list[str] | None = None
    buf = io.StringIO()
    writer = csv.writer(buf)
    for op, res in rows:
        item = _row_dict(op, res)
        if header is None:
            header = [*CSV_COLUMNS, *(name for name, _ in op.extra)]
            writer.writerow(header)
        writer.writerow([neutralise("" if item.get(col) is None else str(item.get(col))) for col in header])
        yield buf.getvalue().encode("utf-8")
        buf.seek(0)
        buf.truncate()
    if header is None:
        writer.writerow(CSV_COLUMNS)
        yield buf.getvalue().encode("utf-8")


def neutralise(cell: str) -> str:
    """Defuse a CSV cell a spreadsheet would run as a formula."""
    if cell and cell[0] in FORMULA_START:
        return "'" + cell
    return cell


def _row_dict(op: Operation, res: UserResult | None) -> dict[str, Any]:
    source = dict(op.source)
    out: dict[str, Any] = {
        "row": op.row,
        "user": op.user,
        **{col: source.get(col, "") for col in SOURCE_COLUMNS},
        "status": res.status.value if res else "pending",
        "reason": res.reason if res else None,
        "graph_code": res.graph_code if res else None,
        "graph_message": res.graph_message if res else None,
        "http_status": res.http_status if res else None,
        "attempts": res.attempts if res else 0,
        "updated_at": iso_time(res.updated_at) if res else None,
        "detail": res.detail if res else None,
    }
    for name, value in op.extra:
        out.setdefault(name, value)
    return out
