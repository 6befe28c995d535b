"""How an upload was read: its encoding and layout, the lines skipped, and what each column was read as.

Every submission's answer and its job carry this report (`input`), so that a column read
differently than its author meant is visible before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reading:
    """The reading report of one upload."""

    format: str  # "csv" or "json"
    mode: str = "add"
    encoding: str | None = None
    delimiter: str | None = None
    layout: str | None = None
    notes: list[str] = field(default_factory=list)
    columns: list[tuple[str, str]] = field(default_factory=list)  # (column as written, what it is read as)

    def to_json(self) -> dict[str, Any]:
        """The API's `input` shape."""
        data: dict[str, Any] = {"format": self.format, "mode": self.mode}
        if self.format == "csv":
            data.update(encoding=self.encoding, delimiter=self.delimiter, layout=self.layout)
        data["columns"] = [{"column": column, "read_as": read_as} for column, read_as in self.columns]
        data["notes"] = list(self.notes)
        return data

    def lines(self) -> list[str]:
        """The report as lines a person reads: `AccountSkuId → add`, then the notes."""
        return [f"{column} → {read_as}" for column, read_as in self.columns] + list(self.notes)
