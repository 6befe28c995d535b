"""Effective dates as an input writes them: an ISO 8601 date or date-time, checked and normalized.

A date (`2026-03-02`) means a day in the tenant profile's time zone, placed on the clock only at
submission (jobs.schedule); a date-time with an offset (`2026-03-02T09:00:00Z`, Graph's form of
`employeeHireDate`) is one instant; a date-time without one is read in the tenant's time zone.
"""

from __future__ import annotations

import re
from datetime import date, datetime

from jobs.input.rules import quoted

# A day, or a day and a time (seconds and fraction optional), with an optional `Z` or ±hh:mm offset.
_ISO_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
                     re.IGNORECASE)
FORMAT_HINT = "write it as an ISO 8601 date (2026-03-02) or date-time (2026-03-02T09:00:00Z)"


def parse_when(text: str) -> date | datetime:
    """The date or date-time `text` names (a date-time without offset is naive); ValueError if it names none."""
    value = text.strip()
    if not _ISO_RE.fullmatch(value):
        raise ValueError(value)
    if len(value) == 10:
        return date.fromisoformat(value)
    return datetime.fromisoformat(value.replace("z", "Z"))


def date_problem(text: str) -> str | None:
    """What is wrong with an effective date as written, or None when it is one."""
    try:
        parse_when(text)
    except ValueError:
        if re.fullmatch(r"\d{1,2}[./-]\d{1,2}[./-]\d{2,4}", text.strip()):
            return f"is not an ISO date: day and month order is ambiguous; {FORMAT_HINT}"
        return f"is not a date; {FORMAT_HINT}"
    return None


def row_dates(effective: str, end: str, *, adds: bool) -> tuple[str | None, bool, tuple[str, str, str] | None]:
    """A row's date from its effective-date and last-day cells: (the date, whether it is a last day, a problem).

    The problem, if any, is `(column, value, message)`: a cell that is not a date, both cells filled,
    or a last day on a row that adds licenses (a leaver's row only removes).
    """
    effective, end = effective.strip(), end.strip()
    if effective and end:
        return None, False, ("end_date", end, "give the row either an effective_date or an end_date, not both")
    column, value = ("end_date", end) if end else ("effective_date", effective)
    if not value:
        return None, False, None
    problem = date_problem(value)
    if problem is not None:
        return None, False, (column, value, f"{column} {quoted(value)} {problem}")
    if end and adds:
        return None, False, (column, value, "end_date is a leaver's last day: the row may only remove licenses "
                                            "(use effective_date for a row that adds)")
    return value, bool(end), None
