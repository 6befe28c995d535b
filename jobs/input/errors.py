"""The errors an input parse collects: capped for the response, all counted."""

from __future__ import annotations

from jobs.input.rules import clip
from jobs.models import FieldError

MAX_KEPT_ERRORS = 1000


class ErrorLog:
    """Errors found so far: the first MAX_KEPT_ERRORS kept, all counted."""

    def __init__(self) -> None:
        self.kept: list[FieldError] = []
        self.total = 0

    def add(self, message: str, row: int | None, column: str | None, value: str | None) -> None:
        """Count an error and keep it while there is room."""
        self.total += 1
        if len(self.kept) < MAX_KEPT_ERRORS:
            self.kept.append(FieldError(message, row, column, None if value is None else clip(value)))

    def add_at(self, row: int, error: FieldError) -> None:
        """Count and keep an error found without its row (e.g. a cached license check), at `row`."""
        self.add(error.message, row, error.column, error.value)

    def add_fatal(self, error: FieldError) -> None:
        """Count and always keep the error that stopped parsing."""
        # The reason parsing stopped must be reported even when the list is full.
        self.total += 1
        if len(self.kept) >= MAX_KEPT_ERRORS:
            self.kept[-1] = error
        else:
            self.kept.append(error)


class Fatal(Exception):
    """A structural problem that stops parsing."""

    def __init__(self, error: FieldError, status_code: int = 422) -> None:
        super().__init__(error.message)
        self.error = error
        self.status_code = status_code
