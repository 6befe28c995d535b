"""Lines some tools write above a CSV's header, recognised and skipped (each noted in the reading report).

- `#TYPE System.Management.Automation.PSCustomObject`: Windows PowerShell 5.1's `Export-Csv` and
  `ConvertTo-Csv` write it unless given `-NoTypeInformation` (PowerShell 6+ no longer do).
- `version:v1.0`: the first line of the Entra admin center's bulk templates (bulk create, delete,
  invite...), also with trailing delimiters once a spreadsheet has saved it (`version:v1.0,,,`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jobs.input.csv_lines import LineReader

_TYPE_LINE_RE = re.compile(r'\s*"?#TYPE\b.*', re.IGNORECASE | re.DOTALL)
_VERSION_LINE_RE = re.compile(r'\s*"?version:v\d+(?:\.\d+)*"?\s*[,;\t"]*\s*', re.IGNORECASE)
# The Entra bulk-create template's third line, Microsoft's example row ("Example:,Chris Green,...").
_EXAMPLE_CELL_RE = re.compile(r"\s*example\s*:", re.IGNORECASE)


@dataclass
class Preamble:
    """What was found above the header: notes for the reading report, and which lines were skipped."""

    notes: list[str] = field(default_factory=list)
    powershell_type: bool = False
    entra_version: str | None = None


def skip_preamble(lines: LineReader) -> tuple[str | None, Preamble]:
    """The header line (not consumed; None for an empty file) after skipping known lines above it."""
    preamble = Preamble()
    while True:
        first = lines.first_line()
        if first is None:
            return None, preamble
        text = first.rstrip("\r\n")
        if _TYPE_LINE_RE.fullmatch(text) and not preamble.powershell_type and preamble.entra_version is None:
            lines.skip_line()
            preamble.powershell_type = True
            preamble.notes.append(f"line {lines.line}: #TYPE line skipped (Windows PowerShell Export-Csv type "
                                  "information)")
            continue
        if _VERSION_LINE_RE.fullmatch(text) and preamble.entra_version is None:
            lines.skip_line()
            preamble.entra_version = text.strip().strip('",;\t')
            preamble.notes.append(f"line {lines.line}: {preamble.entra_version} line skipped (Entra admin center "
                                  "bulk template)")
            continue
        return first, preamble


def is_example_row(first_cell: str) -> bool:
    """Whether a template's data row is Microsoft's example row (its first cell starts with `Example:`)."""
    return _EXAMPLE_CELL_RE.match(first_cell) is not None
