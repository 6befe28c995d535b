"""CSV text as records: a bounded streaming line reader under csv.reader, malformed CSV named precisely."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence

from jobs.input.errors import Fatal
from jobs.input.rules import clip
from jobs.models import FieldError

HEADER_CAP = 64 * 1024  # the header line may not be longer than this

_BLANK_LINES_RE = re.compile(r"[\r\n]+")
_LF_BLOCK = "\n" * 4096
_CRLF_BLOCK = "\r\n" * 2048


class Overflow(Exception):
    """The current record grew past the size any valid record can have."""


class LineReader:
    """The decoded text as physical lines for csv.reader, tracking where each record starts."""

    def __init__(self, pieces: Iterator[str], cap: int) -> None:
        self._pieces = pieces
        self._buf = ""
        self._pos = 0
        self.line = 0  # number of the last line handed out
        self.record_start = 1
        self.cap = cap  # the most characters a record may have
        self.exhausted = False  # the reader asked for a line past the end
        self._fresh = True
        self._record_chars = 0
        self._record_parts: list[str] = []

    def __iter__(self) -> LineReader:
        return self

    def _fill(self) -> bool:
        piece = next(self._pieces, None)
        if piece is None:
            return False
        self._buf = self._buf[self._pos :] + piece
        self._pos = 0
        return True

    def _skip_blank_lines(self) -> None:
        # Runs of empty lines between records are skipped here in C, not record by record.
        while True:
            buf, pos = self._buf, self._pos
            match = _BLANK_LINES_RE.match(buf, pos, pos + 256)
            if match:
                end = match.end()
                if end == pos + 256:  # a long run: skip it by memcmp-sized blocks, not char by char
                    end = pos
                    for block in (_LF_BLOCK, _CRLF_BLOCK):
                        while buf.startswith(block, end):
                            end += len(block)
                    tail = _BLANK_LINES_RE.match(buf, end)
                    end = tail.end() if tail else end
                self.line += buf.count("\n", pos, end)
                self._pos = end
            if self._pos < len(self._buf) or not self._fill():
                return

    def _line_end(self) -> int:
        """Index just past the next line in the buffer (reading more as needed), or -1 at the end."""
        idx = self._buf.find("\n", self._pos)
        while idx < 0:
            if len(self._buf) - self._pos + self._record_chars > self.cap:
                raise Overflow
            searched = len(self._buf) - self._pos
            if not self._fill():
                return len(self._buf) if self._pos < len(self._buf) else -1
            idx = self._buf.find("\n", searched)
        return idx + 1

    def first_line(self) -> str | None:
        """The first line with content (blank lines before it are consumed), not consumed itself."""
        while True:
            self._skip_blank_lines()
            end = self._line_end()
            if end < 0:
                return None
            line = self._buf[self._pos : end]
            if line.strip():
                return line
            self._pos = end
            self.line += 1

    def skip_line(self) -> str:
        """Consume the line `first_line` returned (a line before the header, such as `#TYPE ...`)."""
        end = self._line_end()
        line = self._buf[self._pos : max(end, self._pos)]
        self._pos = max(end, self._pos)
        self.line += 1
        return line

    def __next__(self) -> str:
        if self._fresh:
            self._skip_blank_lines()
        end = self._line_end()
        if end < 0:
            self.exhausted = True
            raise StopIteration
        line = self._buf[self._pos : end]
        self._pos = end
        self.line += 1
        if self._fresh:
            self.record_start = self.line
            self._fresh = False
        self._record_chars += len(line)
        self._record_parts.append(line)
        if self._record_chars > self.cap:
            raise Overflow
        return line

    def end_record(self) -> None:
        """The reader returned a record: the next line starts a new one."""
        self._fresh = True
        self._record_chars = 0
        self._record_parts.clear()

    def record_text(self) -> str:
        """The lines of the current record handed out so far."""
        return "".join(self._record_parts)

    def overflow_prefix(self) -> tuple[int, str, int]:
        """(start line, first `cap` characters, physical lines) of the record that overflowed."""
        start = self.line + 1 if self._fresh else self.record_start
        text = self.record_text() + self._buf[self._pos : self._pos + self.cap]
        return start, text[: self.cap + 1], len(self._record_parts) or 1


class Records:
    """The CSV records of a LineReader, with the line each starts on; malformed CSV is Fatal."""

    def __init__(self, lines: LineReader, delimiter: str) -> None:
        self._lines = lines
        self._delimiter = delimiter
        self._reader = csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)
        self._labels: Sequence[str] = ()
        self._max_cell_chars = 0
        self.row = 0  # the line the last record returned starts on

    def __iter__(self) -> Records:
        return self

    def __next__(self) -> list[str]:
        try:
            record = next(self._reader)
        except Overflow:
            raise Fatal(self._overflow_error()) from None
        except csv.Error as exc:
            raise Fatal(self._malformed(exc)) from None
        self.row = self._lines.record_start
        self._lines.end_record()
        return record

    def start_rows(self, labels: Sequence[str], max_cell_chars: int) -> None:
        """The header has been read: the records that follow are data rows under these column labels."""
        self._labels = labels
        self._max_cell_chars = max_cell_chars
        self._lines.cap = len(labels) * (max_cell_chars + 3) + 2

    def _overflow_error(self) -> FieldError:
        return overflow_error(self._lines, self._delimiter, self._labels, self._max_cell_chars)

    def _malformed(self, exc: csv.Error) -> FieldError:
        """What is wrong with the record csv.reader refused, found from the text (not the error's wording)."""
        row = self._lines.record_start
        text = self._lines.record_text()
        if self._lines.exhausted:
            message = (
                f"a quoted cell starting in row {row} is never closed (unbalanced quotes); add the closing "
                '" or remove the opening one'
            )
        elif (fault := _strict_fault(text, self._delimiter)) is not None:
            message = fault.format(row=row)
        elif len(text) > csv.field_size_limit():
            limit = self._max_cell_chars or HEADER_CAP
            message = f"a cell in row {row} is longer than {limit:,} characters, the limit"
        else:
            message = f"row {row} is not valid CSV: {exc}"
        return FieldError(message, row=row)


def overflow_error(
    lines: LineReader, delimiter: str = ",", labels: Sequence[str] = (), max_cell_chars: int = 0
) -> FieldError:
    """The error for a record that overflowed: an unclosed quote, or an overlong cell or header line."""
    start, prefix, physical = lines.overflow_prefix()
    if physical > 1:
        return FieldError(
            f"a quoted cell starting in row {start} is still open after {physical} lines, longer than any "
            'row may be; check for an unbalanced quote (a " with no closing ")',
            row=start,
        )
    try:
        cells = next(csv.reader(io.StringIO(prefix, newline=""), delimiter=delimiter))
    except (csv.Error, StopIteration):
        cells = []
    column = labels[len(cells) - 1] if cells and len(cells) <= len(labels) else None
    in_header = not labels
    limit = HEADER_CAP if in_header else max_cell_chars
    what = "the header line" if in_header else "a cell"
    return FieldError(
        f"{what} is longer than {limit:,} characters, the limit; shorten it (parsing stopped here)",
        row=start,
        column=column,
        value=clip(cells[-1]) if cells else None,
    )


_BARE_CR = "row {row} ends with a bare carriage return; save the file with Windows (CRLF) or Unix (LF) line endings"
_AFTER_QUOTE = 'row {row} has text right after a closing quote; inside a quoted cell write a quote as "" (two quotes)'


def _strict_fault(text: str, delimiter: str) -> str | None:
    """The message for the first fault a strict csv.reader stops at in `text`, or None.

    The faults: a carriage return not followed by a line feed outside quotes, or text right after the
    quote closing a cell.
    """
    quoted = after_quote = False
    cell_start = True
    index, end = 0, len(text)
    while index < end:
        char = text[index]
        index += 1
        if quoted:
            if char == '"' and text.startswith('"', index):
                index += 1  # "" inside a quoted cell is one quote
            elif char == '"':
                quoted, after_quote = False, True
            continue
        if char == "\r" and index < end and text[index] != "\n":
            return _BARE_CR
        if after_quote and char not in (delimiter, "\r", "\n"):
            return _AFTER_QUOTE
        after_quote = False
        quoted = cell_start and char == '"'
        cell_start = char in (delimiter, "\n")
    return None
