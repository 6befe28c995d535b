"""Job input: CSV streams and JSON bodies parsed and validated into Operations."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.models import FORMULA_START, SOURCE_COLUMNS, FieldError, InputRejected, LicenseAdd, Operation
from jobs.skus import GUID_RE, Sku, SkuCatalog, UnknownName

if TYPE_CHECKING:
    from config.settings import Settings

MAX_KEPT_ERRORS = 1000
MAX_JSON_DEPTH = 32
MAX_UPN_CHARS = 113  # Entra ID: 64 for the part before @, 48 for the domain, plus the @
MAX_UPN_LOCAL_CHARS = 64
_VALUE_CHARS = 100  # a value as stored in a FieldError
_SHOW_CHARS = 60  # a value as quoted inside a message
_HEADER_CAP = 64 * 1024  # the header line may not be longer than this

# Officially assigned ISO 3166-1 alpha-2 codes (249), as Graph's usageLocation accepts them.
_ISO_CODES = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT
    BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH
    ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT
    HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS
    LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI
    NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG
    SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG
    UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
"""
ISO_COUNTRIES = frozenset(_ISO_CODES.split())
# What people write instead of the alpha-2 code: EU usage (UK, EL) and alpha-3 codes.
_COUNTRY_FIXES = {"UK": "GB", "EL": "GR", "USA": "US", "GBR": "GB", "DEU": "DE", "FRA": "FR", "CAN": "CA"}

# Header names as written (lower-cased; spaces, underscores and hyphens removed) → canonical column.
COLUMN_ALIASES = {
    "user": "user",
    "userprincipalname": "user",
    "upn": "user",
    "id": "user",
    "add": "add",
    "addlicenses": "add",
    "licenses": "add",
    "sku": "add",
    "remove": "remove",
    "removelicenses": "remove",
    "disabledplans": "disabled_plans",
    "usagelocation": "usage_location",
}
# Columns our results CSV writes: a failed-rows export resubmitted as is must parse, so they are dropped.
IGNORED_COLUMNS = frozenset(
    {"row", "status", "reason", "graphcode", "graphmessage", "httpstatus", "attempts", "updatedat", "detail"}
)

_IGNORED = "ignored"
_BLANK = "blank"
_EXTRA = "extra"

_UPN_DOMAIN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_PHONE_RE = re.compile(r"[0-9 .()/+-]*")
_LIST_SPLIT_RE = re.compile(r"[;|]")
_BLANK_LINES_RE = re.compile(r"[\r\n]+")
_LF_BLOCK = "\n" * 4096
_CRLF_BLOCK = "\r\n" * 2048
_SPACE_RE = re.compile(r"\s")
# A control character anywhere, or a cell (cells joined by newlines) starting like a formula.
_SUSPECT_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\n[=@\t\r+-]")
# The everyday UPN, accepted without the detailed checks of user_problem().
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}[A-Za-z0-9])?"
_PLAIN_UPN_RE = re.compile(rf"[A-Za-z0-9._'!#^~+-]{{1,64}}@{_LABEL}(?:\.{_LABEL}){{1,3}}")


@dataclass(frozen=True)
class Limits:
    """Input size limits, from settings."""

    max_rows: int = 1_000_000
    max_upload_bytes: int = 512 * 1024 * 1024
    max_cell_chars: int = 1024
    max_json_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits configured in `settings`."""
        return cls(
            max_rows=settings.max_rows,
            max_upload_bytes=settings.max_upload_bytes,
            max_cell_chars=settings.max_cell_chars,
            max_json_bytes=settings.max_json_bytes,
        )


def _clip(value: str, limit: int = _VALUE_CHARS) -> str:
    """A value shortened for display."""
    return value if len(value) <= limit else f"{value[:limit]}…"


def _q(value: str) -> str:
    """A value quoted inside a message, shortened."""
    return f'"{_clip(value, _SHOW_CHARS)}"'


def _size(n: int) -> str:
    """A byte count for people."""
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n:,} bytes"


def cell_problem(value: str, max_chars: int) -> str | None:
    """Why a cell is refused whatever its column (length, control characters, formula), or None."""
    if len(value) > max_chars:
        return f"is {len(value):,} characters long; the limit is {max_chars:,} characters"
    bad = _CONTROL_RE.search(value)
    if bad:
        char = bad.group()
        name = "a NUL character" if char == "\0" else f"a control character (U+{ord(char):04X})"
        return f"contains {name}; remove it"
    first = value[0] if value else ""
    if first in FORMULA_START and not (first in "+-" and _PHONE_RE.fullmatch(value)):
        shown = {"\t": "a tab", "\r": "a carriage return"}.get(first, f'"{first}"')
        return (
            f"looks like a spreadsheet formula (starts with {shown}), which spreadsheet apps would run; "
            "remove the leading character"
        )
    return None


class _Errors:
    """Errors found so far: the first MAX_KEPT_ERRORS kept, all counted."""

    def __init__(self) -> None:
        self.kept: list[FieldError] = []
        self.total = 0

    def add(self, message: str, row: int | None, column: str | None, value: str | None) -> None:
        """Count an error and keep it while there is room."""
        self.total += 1
        if len(self.kept) < MAX_KEPT_ERRORS:
            self.kept.append(FieldError(message, row, column, None if value is None else _clip(value)))

    def add_fatal(self, error: FieldError) -> None:
        """Count and always keep the error that stopped parsing."""
        # The reason parsing stopped must be reported even when the list is full.
        self.total += 1
        if len(self.kept) >= MAX_KEPT_ERRORS:
            self.kept[-1] = error
        else:
            self.kept.append(error)


class _SeenUsers:
    """Users seen so far, as 64-bit keyed hashes in an open-addressing table (~12 bytes a user)."""

    def __init__(self) -> None:
        self._size = 1 << 12
        self._keys = array("Q", [0]) * self._size
        self._rows = array("I", [0]) * self._size
        self._count = 0

    @staticmethod
    def _digest(user: str) -> int:
        # str hashes are 64-bit SipHash keyed per process: collisions (a false "duplicate") are
        # about n²/2⁶⁵, 3e-8 for a million users, and cannot be crafted from outside.
        return hash(user.lower()) & 0xFFFF_FFFF_FFFF_FFFF or 1

    def add(self, user: str, row: int) -> int | None:
        """Record `user` at `row`; the row it was first seen at if it was seen before."""
        key = self._digest(user)
        keys, mask = self._keys, self._size - 1
        i = key & mask
        while True:
            k = keys[i]
            if k == 0:
                break
            if k == key:
                return self._rows[i]
            i = (i + 1) & mask
        keys[i] = key
        self._rows[i] = row
        self._count += 1
        if self._count * 2 > self._size:
            self._grow()
        return None

    def _grow(self) -> None:
        old_keys, old_rows = self._keys, self._rows
        self._size *= 4
        self._keys = array("Q", [0]) * self._size
        self._rows = array("I", [0]) * self._size
        keys, rows, mask = self._keys, self._rows, self._size - 1
        for key, row in zip(old_keys, old_rows, strict=True):
            if key:
                i = key & mask
                while keys[i]:
                    i = (i + 1) & mask
                keys[i] = key
                rows[i] = row


def user_problem(user: str, delimiter: str | None = None) -> str | None:
    """Why `user` is neither a valid UPN nor an object id, or None."""
    if not user:
        return "user is empty; every row needs a userPrincipalName or an object id"
    shown = _q(user)
    if "@" in user:
        if len(user) > MAX_UPN_CHARS:
            return (
                f"user {shown} is longer than {MAX_UPN_CHARS} characters ({len(user)}), "
                "the maximum for a userPrincipalName"
            )
        if _SPACE_RE.search(user):
            return f"user {shown} contains a space; a userPrincipalName has none"
        local, _, domain = user.partition("@")
        if "@" in domain:
            hint = ""
            if delimiter and (";" in user or "," in user):
                hint = f'; the file is "{delimiter}"-separated, check this row\'s delimiter'
            return f"user {shown} holds more than one @: give one userPrincipalName per row{hint}"
        if not local:
            return f"user {shown} is not a valid userPrincipalName: nothing before the @"
        if len(local) > MAX_UPN_LOCAL_CHARS:
            return (
                f"user {shown} is not a valid userPrincipalName: the part before @ is longer than "
                f"{MAX_UPN_LOCAL_CHARS} characters"
            )
        if not _UPN_DOMAIN_RE.fullmatch(domain):
            hint = ""
            other = ";" if delimiter == "," else "," if delimiter == ";" else ""
            if other and other in domain:
                hint = f'; the file is "{delimiter}"-separated but this row seems to use "{other}"'
            return (
                f"user {shown} is not a valid userPrincipalName: {_q(domain)} is not a domain name "
                f"(expected name@contoso.com){hint}"
            )
        return None
    if GUID_RE.fullmatch(user):
        return None
    if _SPACE_RE.search(user):
        return f"user {shown} contains a space; give a userPrincipalName (name@domain) or an object id"
    return (
        f"user {shown} is neither a userPrincipalName (name@domain) nor a valid object id "
        "(a GUID such as 2b1c6c0e-33a4-4c1d-8b5b-3f5b7c2e9a10)"
    )


def usage_location_problem(value: str) -> str | None:
    """Why `value` is not an assigned ISO 3166-1 alpha-2 code, or None."""
    code = value.strip().upper()
    if code in ISO_COUNTRIES:
        return None
    fix = _COUNTRY_FIXES.get(code)
    if fix is None and len(code) == 2 and code.isalpha():
        return (
            f"usage_location {_q(value)} is not an assigned ISO 3166-1 alpha-2 country code; use the user's "
            "two-letter country code such as US, GB or DE"
        )
    hint = f"; did you mean {fix}?" if fix else "; use two letters such as US, GB or DE"
    return f"usage_location {_q(value)} is not an ISO 3166-1 alpha-2 country code{hint}"


def _split_names(cell: str) -> list[str]:
    """The names in a `;`- or `|`-separated cell, trimmed, empties dropped."""
    return [n for n in (p.strip() for p in _LIST_SPLIT_RE.split(cell)) if n]


@dataclass(frozen=True)
class _Licenses:
    """The license part of a CSV row, resolved (cached per distinct cell combination)."""

    add: tuple[LicenseAdd, ...]
    remove: tuple[str, ...]
    problems: tuple[tuple[str, str, str], ...]  # (column, value, message)


def _resolve_csv_licenses(catalog: SkuCatalog, add_cell: str, remove_cell: str, plans_cell: str) -> _Licenses:
    """Resolve the add, remove and disabled_plans cells of one row."""
    problems: list[tuple[str, str, str]] = []
    added: list[Sku] = []
    for name in _split_names(add_cell):
        try:
            sku = catalog.resolve_sku(name)
        except UnknownName as exc:
            problems.append(("add", name, exc.message))
            continue
        if sku not in added:
            added.append(sku)
    removed: list[Sku] = []
    for name in _split_names(remove_cell):
        try:
            sku = catalog.resolve_sku(name)
        except UnknownName as exc:
            problems.append(("remove", name, exc.message))
            continue
        if sku in added:
            problems.append(
                (
                    "remove",
                    name,
                    f"license {sku.part_number} is both added and removed in this row; keep it in one column only",
                )
            )
        elif sku not in removed:
            removed.append(sku)
    plans: dict[str, list[str]] = {s.sku_id: [] for s in added}
    plan_names = _split_names(plans_cell)
    if plan_names and not add_cell.strip():
        problems.append(
            (
                "disabled_plans",
                plans_cell,
                "disabled_plans needs licenses in add: plans can only be disabled in SKUs this row adds",
            )
        )
    elif plan_names and not any(c == "add" for c, _, _ in problems):
        for name in plan_names:
            try:
                hits = catalog.resolve_plan(name, added)
            except UnknownName as exc:
                problems.append(("disabled_plans", name, exc.message))
                continue
            for sku_id, plan_id in hits:
                if plan_id not in plans[sku_id]:
                    plans[sku_id].append(plan_id)
    return _Licenses(
        add=tuple(LicenseAdd(s.sku_id, tuple(plans[s.sku_id])) for s in added),
        remove=tuple(s.sku_id for s in removed),
        problems=tuple(problems),
    )


class _Fatal(Exception):
    """A structural problem that stops parsing."""

    def __init__(self, error: FieldError, status_code: int = 422) -> None:
        super().__init__(error.message)
        self.error = error
        self.status_code = status_code


class _Overflow(Exception):
    """The current record grew past the size any valid record can have."""


class _Lines:
    """The decoded text as physical lines for csv.reader, tracking where each record starts."""

    def __init__(self, pieces: Iterator[str], cap: int) -> None:
        self._pieces = pieces
        self._buf = ""
        self._pos = 0
        self.line = 0  # number of the last line handed out
        self.record_start = 1
        self.cap = cap
        self._fresh = True
        self._record_chars = 0
        self._record_parts: list[str] = []

    def __iter__(self) -> _Lines:
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
        start = self._pos
        idx = self._buf.find("\n", start)
        while idx < 0:
            if len(self._buf) - self._pos + self._record_chars > self.cap:
                raise _Overflow
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

    def __next__(self) -> str:
        if self._fresh:
            self._skip_blank_lines()
        end = self._line_end()
        if end < 0:
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
            raise _Overflow
        return line

    def end_record(self) -> None:
        """The reader returned a record: the next line starts a new one."""
        self._fresh = True
        self._record_chars = 0
        self._record_parts.clear()

    def overflow_prefix(self) -> tuple[int, str, int]:
        """(start line, first `cap` characters, physical lines) of the record that overflowed."""
        start = self.line + 1 if self._fresh else self.record_start
        text = "".join(self._record_parts) + self._buf[self._pos : self._pos + self.cap]
        return start, text[: self.cap + 1], len(self._record_parts) or 1


class CsvParse:
    """A streaming parse of a CSV job file: iterate for Operations, then read `errors`."""

    def __init__(self, chunks: Iterable[bytes], catalog: SkuCatalog, limits: Limits) -> None:
        self._chunks = chunks
        self._catalog = catalog
        self._limits = limits
        self._errors = _Errors()
        self._started = False
        self._finished = False
        self.rows = 0
        self.header: tuple[str, ...] = ()
        self.extra_columns: tuple[str, ...] = ()
        self.delimiter = ","
        self.status_code = 422
        self.bytes_read = 0
        self._labels: list[str] = []
        self._iterator: Iterator[Operation] = iter(())

    @property
    def errors(self) -> list[FieldError]:
        """The errors kept (at most MAX_KEPT_ERRORS), in file order."""
        return self._errors.kept

    @property
    def total_errors(self) -> int:
        """How many errors were found in all."""
        return self._errors.total

    def __iter__(self) -> Iterator[Operation]:
        if self._started:
            raise RuntimeError("a CsvParse can be iterated only once")
        self._started = True
        self._iterator = self._run()
        return self._iterator

    def _run(self) -> Iterator[Operation]:
        try:
            yield from self._parse()
        except _Fatal as fatal:
            self._errors.add_fatal(fatal.error)
            self.status_code = fatal.status_code
        finally:
            self._finished = True

    def raise_if_errors(self) -> None:
        """Finish the parse (discarding operations not yet read) and raise InputRejected on any error."""
        if not self._finished:
            for _ in self._iterator if self._started else self:
                pass
        if self._errors.total:
            raise InputRejected(list(self._errors.kept), self._errors.total, self.status_code)

    # -- bytes to text -------------------------------------------------------------------------

    def _decoded(self) -> Iterator[str]:
        """The chunks decoded as UTF-8 (BOM dropped), with size, NUL and encoding checks."""
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        offset = 0
        newlines = 0
        at_start = True
        limit = self._limits.max_upload_bytes
        for chunk in self._chunks:
            if not chunk:
                continue
            if offset + len(chunk) > limit:
                raise _Fatal(
                    FieldError(f"the file is larger than {_size(limit)}, the upload limit; split it into several jobs"),
                    413,
                )
            if at_start:
                self._sniff(chunk)
            pending = len(decoder.getstate()[0])
            nul = chunk.find(b"\0")
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad = exc.start - pending
                if nul < 0 or bad < nul:
                    line = newlines + 1 + chunk[: max(bad, 0)].count(b"\n")
                    raise _Fatal(self._not_utf8(exc.object[exc.start], offset + bad, line)) from None
                text = ""
            if nul >= 0:
                line = newlines + 1 + chunk[:nul].count(b"\n")
                raise _Fatal(
                    FieldError(
                        f"the file contains a NUL byte (byte offset {offset + nul:,}, line {line}), so it is "
                        'binary, not CSV text; export it from your spreadsheet as "CSV UTF-8"',
                        row=line,
                    )
                )
            newlines += chunk.count(b"\n")
            offset += len(chunk)
            self.bytes_read = offset
            if at_start and text:
                at_start = False
                text = text.removeprefix("\ufeff")
            if text:
                yield text
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise _Fatal(
                self._not_utf8(exc.object[exc.start], offset - len(exc.object) + exc.start, newlines + 1)
            ) from None

    @staticmethod
    def _not_utf8(byte: int, offset: int, line: int) -> FieldError:
        return FieldError(
            f"the file is not UTF-8 text: byte 0x{byte:02X} at byte offset {offset:,} (line {line}) is not "
            'valid UTF-8; save the file as "CSV UTF-8" (Excel: File > Save As > CSV UTF-8)',
            row=line,
        )

    @staticmethod
    def _sniff(first: bytes) -> None:
        """Name the usual wrong files (workbooks, UTF-16 exports) before byte-level errors do."""
        if first.startswith(b"PK\x03\x04"):
            raise _Fatal(
                FieldError(
                    "the file is an Excel workbook or another ZIP archive, not CSV text; in Excel use "
                    'File > Save As > "CSV UTF-8"',
                    row=1,
                )
            )
        if first.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise _Fatal(
                FieldError(
                    'the file is UTF-16 ("Unicode text"), not UTF-8; save it as "CSV UTF-8"',
                    row=1,
                )
            )

    # -- text to records -----------------------------------------------------------------------

    def _parse(self) -> Iterator[Operation]:
        lines = _Lines(self._decoded(), _HEADER_CAP)
        try:
            first = lines.first_line()
        except _Overflow:
            raise _Fatal(self._overflow_error(lines)) from None
        if first is None:
            raise _Fatal(
                FieldError(
                    "the file is empty; the first line must be a header naming a user column (e.g. user,add,remove)"
                )
            )
        self.delimiter = self._detect_delimiter(first, lines.line + 1)
        reader = csv.reader(lines, delimiter=self.delimiter, quotechar='"', doublequote=True, strict=True)
        names = self._next_record(reader, lines)
        if names is None:  # pragma: no cover - first_line() saw content
            raise _Fatal(FieldError("the file is empty"))
        header_row = lines.record_start
        lines.end_record()
        roles, labels = self._read_header(names, header_row)
        lines.cap = len(names) * (self._limits.max_cell_chars + 3) + 2
        yield from self._rows(reader, lines, roles, labels)
        if self.rows == 0:
            raise _Fatal(FieldError("the file has a header but no data rows; add one row per user below the header"))

    def _detect_delimiter(self, line: str, row: int) -> str:
        """`,` or `;`, from the header line alone (cells may hold the other one as a list separator)."""
        counts = {",": 0, ";": 0}
        quoted = False
        for char in line:
            if char == '"':
                quoted = not quoted
            elif not quoted and char in counts:
                counts[char] += 1
        if counts[","] and counts[";"]:
            raise _Fatal(
                FieldError(
                    f'the header line mixes "," ({counts[","]}×) and ";" ({counts[";"]}×) as delimiters; '
                    "separate all columns with one of them",
                    row=row,
                    value=_clip(line.rstrip("\r\n")),
                )
            )
        if counts[";"]:
            return ";"
        if not counts[","] and "\t" in line:
            raise _Fatal(
                FieldError(
                    "the header line is tab-separated; save the file as CSV (comma- or semicolon-separated)",
                    row=row,
                    value=_clip(line.rstrip("\r\n")),
                )
            )
        return ","

    def _next_record(self, reader: Iterator[list[str]], lines: _Lines) -> list[str] | None:
        """The next record, or None at the end; malformed CSV is fatal."""
        try:
            return next(reader)
        except StopIteration:
            return None
        except _Overflow:
            raise _Fatal(self._overflow_error(lines)) from None
        except csv.Error as exc:
            raise _Fatal(self._csv_error(exc, lines)) from None

    def _overflow_error(self, lines: _Lines) -> FieldError:
        start, prefix, physical = lines.overflow_prefix()
        if physical > 1:
            return FieldError(
                f"a quoted cell starting in row {start} is still open after {physical} lines, longer than any "
                'row may be; check for an unbalanced quote (a " with no closing ")',
                row=start,
            )
        column: str | None = None
        try:
            cells = next(csv.reader(io.StringIO(prefix, newline=""), delimiter=self.delimiter))
        except (csv.Error, StopIteration):
            cells = []
        if cells and self.header:
            index = len(cells) - 1
            column = self._labels[index] if index < len(self._labels) else None
        limit = self._limits.max_cell_chars if self.header else _HEADER_CAP
        what = "a cell" if self.header else "the header line"
        return FieldError(
            f"{what} is longer than {limit:,} characters, the limit; shorten it (parsing stopped here)",
            row=start,
            column=column,
            value=_clip(cells[-1]) if cells else None,
        )

    def _csv_error(self, exc: csv.Error, lines: _Lines) -> FieldError:
        text = str(exc)
        row = lines.record_start
        if "unexpected end of data" in text:
            message = (
                f"a quoted cell starting in row {row} is never closed (unbalanced quotes); add the closing "
                '" or remove the opening one'
            )
        elif "expected after" in text:
            message = (
                f'row {row} has text right after a closing quote; inside a quoted cell write a quote as "" (two quotes)'
            )
        elif "new-line character" in text:
            message = (
                f"row {row} ends with a bare carriage return; save the file with Windows (CRLF) or Unix (LF) "
                "line endings"
            )
        elif "field larger than field limit" in text:
            message = f"a cell in row {row} is longer than {self._limits.max_cell_chars:,} characters, the limit"
        else:
            message = f"row {row} is not valid CSV: {text}"
        return FieldError(message, row=row)

    def _read_header(self, names: list[str], row: int) -> tuple[list[str], list[str]]:
        """The role of each column (canonical name, extra, ignored, blank) and its display label."""
        roles: list[str] = []
        labels: list[str] = []
        seen: dict[str, str] = {}
        extras: dict[str, str] = {}
        for raw in names:
            name = raw.strip()
            key = re.sub(r"[\s_-]+", "", name).lower()
            canonical = COLUMN_ALIASES.get(key)
            if canonical:
                if canonical in seen:
                    raise _Fatal(
                        FieldError(
                            f'columns "{seen[canonical]}" and "{name}" both mean {canonical}; keep one of them',
                            row=row,
                            column=canonical,
                            value=_clip(name),
                        )
                    )
                seen[canonical] = name
                roles.append(canonical)
                labels.append(canonical)
            elif key in IGNORED_COLUMNS:
                roles.append(_IGNORED)
                labels.append(name)
            elif not key:
                roles.append(_BLANK)
                labels.append(f"column {len(roles)}")
            else:
                if key in extras:
                    raise _Fatal(
                        FieldError(
                            f'column "{name}" appears twice in the header (also as "{extras[key]}"); rename '
                            "or remove one",
                            row=row,
                            column=name,
                            value=_clip(name),
                        )
                    )
                problem = cell_problem(name, self._limits.max_cell_chars)
                if problem:
                    raise _Fatal(FieldError(f"the header name {problem}", row=row, column=name, value=_clip(name)))
                extras[key] = name
                roles.append(_EXTRA)
                labels.append(name)
        if "user" not in seen:
            found = ", ".join(f'"{_clip(n.strip(), 40)}"' for n in names[:10])
            looks_like_data = any("@" in n for n in names)
            hint = "; the first line looks like data: add a header line above it" if looks_like_data else ""
            raise _Fatal(
                FieldError(
                    "no user column: the header must name a column user (or userPrincipalName, upn, id); "
                    f"found {found}{hint}",
                    row=row,
                    column="user",
                )
            )
        self.header = tuple(r for r in roles if r in COLUMN_ALIASES.values())
        self.extra_columns = tuple(label for r, label in zip(roles, labels, strict=True) if r == _EXTRA)
        self._labels = labels
        return roles, labels

    def _rows(
        self, reader: Iterator[list[str]], lines: _Lines, roles: list[str], labels: list[str]
    ) -> Iterator[Operation]:
        """Validate each data row; yield its Operation while the file has no error so far."""
        errors = self._errors
        max_rows = self._limits.max_rows
        max_chars = self._limits.max_cell_chars
        ncols = len(roles)
        # Short records are padded to ncols + 1 cells: index ncols is always "", for absent columns.
        index = {role: roles.index(role) if role in roles else ncols for role in COLUMN_ALIASES.values()}
        ui, ai, ri, pi, li = (index[c] for c in ("user", "add", "remove", "disabled_plans", "usage_location"))
        extra_at = [(i, labels[i]) for i, role in enumerate(roles) if role == _EXTRA]
        source_at = [(c, index[c]) for c in SOURCE_COLUMNS if c in roles]
        checked_at = [i for i, role in enumerate(roles) if role != _IGNORED]
        blank_at = [i for i, role in enumerate(roles) if role == _BLANK]
        all_checked = len(checked_at) == ncols
        seen = _SeenUsers()
        cache: dict[tuple[str, str, str], _Licenses] = {}
        catalog = self._catalog
        delimiter = self.delimiter
        padding = [""] * (ncols + 1)
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except _Overflow:
                raise _Fatal(self._overflow_error(lines)) from None
            except csv.Error as exc:
                raise _Fatal(self._csv_error(exc, lines)) from None
            row = lines.record_start
            lines.end_record()
            width = len(record)
            if width <= ncols:
                if not "".join(record).strip():
                    continue  # a blank line
                record += padding[width:]
            else:
                surplus = [c for c in record[ncols:] if c.strip()]
                if not surplus and not "".join(record).strip():
                    continue
                del record[ncols:]
                record.append("")
                if surplus:
                    errors.add(
                        f"row has {width} cells but the header has {ncols} columns; quote cells that "
                        f'contain "{delimiter}"',
                        row,
                        None,
                        surplus[0],
                    )
            self.rows += 1
            if self.rows > max_rows:
                raise _Fatal(
                    FieldError(
                        f"the file has more than {max_rows:,} data rows, the limit for one job; split it into "
                        "several files",
                        row=row,
                    )
                )

            bad: set[str] = set()
            # One scan of the whole record; only a suspicious record is checked cell by cell.
            cells = record if all_checked else [record[i] for i in checked_at]
            if (
                max(map(len, cells)) > max_chars
                or _SUSPECT_RE.search("\n" + "\n".join(cells))
                or (blank_at and any(record[i].strip() for i in blank_at))
            ):
                bad = self._check_cells(record, roles, labels, row)

            user = record[ui].strip()
            if "user" not in bad:
                plain_upn = len(user) <= MAX_UPN_CHARS and _PLAIN_UPN_RE.fullmatch(user)
                problem = None if plain_upn else user_problem(user, delimiter)
                if problem:
                    errors.add(problem, row, "user", user)
                else:
                    first = seen.add(user, row)
                    if first is not None:
                        errors.add(
                            f"user {_q(user)} appears more than once: first in row {first}; give each user one "
                            "row (one row can both add and remove licenses)",
                            row,
                            "user",
                            user,
                        )

            add_cell = record[ai] if "add" not in bad else ""
            remove_cell = record[ri] if "remove" not in bad else ""
            plans_cell = record[pi] if not bad & {"add", "disabled_plans"} else ""
            key = (add_cell, remove_cell, plans_cell)
            licenses = cache.get(key)
            if licenses is None:
                licenses = _resolve_csv_licenses(catalog, add_cell, remove_cell, plans_cell)
                if len(cache) >= 4096:
                    cache.clear()
                cache[key] = licenses
            for column, value, message in licenses.problems:
                errors.add(message, row, column, value)

            location_cell = record[li].strip()
            location: str | None = None
            if location_cell and "usage_location" not in bad:
                location = location_cell.upper()
                if location not in ISO_COUNTRIES:
                    errors.add(usage_location_problem(location_cell) or "", row, "usage_location", location_cell)
                    location = None

            if not (
                licenses.add or licenses.remove or location_cell or _split_names(record[ai]) or _split_names(record[ri])
            ):
                errors.add(
                    "row changes nothing: give licenses in add or remove, or a usage_location",
                    row,
                    None,
                    None,
                )
            if errors.total == 0:
                yield Operation(
                    row=row,
                    user=user,
                    add=licenses.add,
                    remove=licenses.remove,
                    usage_location=location,
                    extra=tuple([(label, record[i]) for i, label in extra_at]),
                    source=tuple([(c, record[i]) for c, i in source_at]),
                )

    def _check_cells(self, record: list[str], roles: list[str], labels: list[str], row: int) -> set[str]:
        """Record errors for cells refused whatever their column; the roles of the refused cells."""
        bad: set[str] = set()
        max_chars = self._limits.max_cell_chars
        for i, role in enumerate(roles):
            cell = record[i]
            if role == _IGNORED or not cell:
                continue
            if role == _BLANK:
                if cell.strip():
                    self._errors.add(
                        f"{labels[i]} has a value but no header name; name the column or remove the value",
                        row,
                        labels[i],
                        cell,
                    )
                continue
            problem = cell_problem(cell, max_chars)
            if problem:
                self._errors.add(f"{labels[i]} {problem}", row, labels[i], cell)
                bad.add(role)
        return bad


def parse_csv(chunks: Iterable[bytes], catalog: SkuCatalog, limits: Limits) -> CsvParse:
    """Start a streaming parse of a CSV job file; iterate the result for Operations."""
    return CsvParse(chunks, catalog, limits)


# -- JSON ----------------------------------------------------------------------------------------


class _In(BaseModel):
    """Base of the JSON input models: strict types, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AddLicenseIn(_In):
    """One `addLicenses` item: `sku` (part number or skuId) or Graph's `skuId`, and plans to disable."""

    sku: str | None = None
    sku_id: str | None = Field(default=None, alias="skuId")
    disabled_plans: list[str] | None = Field(default=None, alias="disabledPlans")


class OperationIn(_In):
    """One item of `operations`."""

    user: str
    add_licenses: list[AddLicenseIn] | None = Field(default=None, alias="addLicenses")
    remove_licenses: list[str] | None = Field(default=None, alias="removeLicenses")
    usage_location: str | None = Field(default=None, alias="usageLocation")
    extra: dict[str, str] | None = None


class JobIn(_In):
    """A JSON job body."""

    tenant: str
    operations: list[OperationIn]


_MODELS_BY_DEPTH: dict[tuple[str, ...], type[BaseModel]] = {
    (): JobIn,
    ("operations", "#"): OperationIn,
    ("operations", "#", "addLicenses", "#"): AddLicenseIn,
}


def _json_path(loc: Sequence[int | str]) -> str:
    """`operations[3].addLicenses[0].sku` from a pydantic location."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _json_type(value: object) -> str:
    """The JSON name of a Python value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _json_value(value: object) -> str | None:
    """A JSON input value for FieldError.value (containers summarized, never serialized whole)."""
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, list):
        return f"[… {len(value)} items]"
    if isinstance(value, dict):
        return "{…}"
    if value is None:
        return None
    return _clip(json.dumps(value))


def _row_of(loc: Sequence[int | str]) -> int | None:
    """The 1-based operation index a location is inside, if any."""
    if len(loc) >= 2 and loc[0] == "operations" and isinstance(loc[1], int):
        return loc[1] + 1
    return None


def _pydantic_errors(exc: ValidationError, errors: _Errors) -> None:
    """Translate pydantic's errors into FieldErrors with JSON paths."""
    for err in exc.errors(include_url=False):
        loc: tuple[int | str, ...] = tuple(err["loc"])
        path = _json_path(loc)
        where = path or "the body"
        kind = err["type"]
        value = err.get("input")
        if kind == "missing":
            message = f'{where}: required field "{loc[-1]}" is missing'
            value = None
        elif kind == "extra_forbidden":
            parent = tuple("#" if isinstance(p, int) else p for p in loc[:-1])
            model = _MODELS_BY_DEPTH.get(parent)
            allowed = ""
            if model is not None:
                names = [f.alias or n for n, f in model.model_fields.items()]
                allowed = f"; allowed here: {', '.join(names)}"
            message = f'{where}: unknown field "{loc[-1]}"{allowed}'
        elif kind == "string_type":
            message = f"{where} must be a string, not {_json_type(value)}"
        elif kind == "list_type":
            message = f"{where} must be an array, not {_json_type(value)}"
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            message = f"{where} must be an object, not {_json_type(value)}"
        else:
            message = f"{where}: {err['msg']}"
        errors.add(message, _row_of(loc), path or None, _json_value(value))


def _too_deep(data: object, limit: int) -> tuple[int | str, ...] | None:
    """The location of a value nested deeper than `limit`, or None."""
    stack: list[tuple[object, int, tuple[int | str, ...]]] = [(data, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            return path
        if isinstance(node, dict):
            stack.extend((v, depth + 1, (*path, k)) for k, v in node.items() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, (*path, i)) for i, v in enumerate(node) if isinstance(v, dict | list))
    return None


def _reject(message: str, status_code: int = 422, column: str | None = None, value: str | None = None) -> NoReturn:
    """Refuse the whole body for one reason."""
    raise InputRejected([FieldError(message, None, column, value)], 1, status_code)


def parse_json(body: bytes, catalog_for: Callable[[str], SkuCatalog], limits: Limits) -> tuple[str, list[Operation]]:
    """Parse and validate a JSON job body into (tenant, operations); InputRejected on any error."""
    if len(body) > limits.max_json_bytes:
        _reject(
            f"the JSON body is {len(body):,} bytes, more than the limit of {_size(limits.max_json_bytes)}; "
            "split it into several jobs or upload a CSV",
            413,
        )
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        _reject(f"the body is not UTF-8 text: byte 0x{body[exc.start]:02X} at byte offset {exc.start:,}")
    try:
        data = json.loads(text)
    except RecursionError:
        _reject(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels; a job body needs at most 6")
    except json.JSONDecodeError as exc:
        _reject(f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    deep = _too_deep(data, MAX_JSON_DEPTH)
    if deep is not None:
        where = _json_path(deep) or "the body"
        raise InputRejected(
            [
                FieldError(
                    f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels (at {_clip(where)}); a job body "
                    "needs at most 6",
                    _row_of(deep),
                    where,
                )
            ]
        )
    if isinstance(data, dict) and isinstance(data.get("operations"), list):
        count = len(data["operations"])
        if count > limits.max_rows:
            _reject(
                f"operations has {count:,} items, more than the limit of {limits.max_rows:,} per job; split "
                "it into several jobs",
                column="operations",
            )
    errors = _Errors()
    try:
        job = JobIn.model_validate(data)
    except ValidationError as exc:
        _pydantic_errors(exc, errors)
        raise InputRejected(errors.kept, errors.total, 422) from None
    try:
        catalog = catalog_for(job.tenant)
    except KeyError:
        _reject(
            f"unknown tenant {_q(job.tenant)}: no tenant profile has this name; use one configured on the server",
            column="tenant",
            value=_clip(job.tenant),
        )
    if not job.operations:
        _reject("operations is empty; give at least one operation", column="operations")
    validator = _JsonValidator(catalog, limits, errors)
    operations = [validator.operation(i, op) for i, op in enumerate(job.operations)]
    if errors.total:
        raise InputRejected(errors.kept, errors.total, 422)
    return job.tenant, [op for op in operations if op is not None]


class _JsonValidator:
    """The per-operation rules of the CSV, applied to JSON operations."""

    def __init__(self, catalog: SkuCatalog, limits: Limits, errors: _Errors) -> None:
        self._catalog = catalog
        self._max_chars = limits.max_cell_chars
        self._errors = errors
        self._seen = _SeenUsers()

    def _cell_ok(self, value: str, row: int, path: str) -> bool:
        problem = cell_problem(value, self._max_chars)
        if problem:
            self._errors.add(f"{path} {problem}", row, path, value)
            return False
        return True

    def _sku(self, text: str, row: int, path: str) -> Sku | None:
        if not self._cell_ok(text, row, path):
            return None
        try:
            return self._catalog.resolve_sku(text)
        except UnknownName as exc:
            self._errors.add(exc.message, row, path, text)
            return None

    def operation(self, index: int, op: OperationIn) -> Operation | None:
        """The Operation for `operations[index]`, or None after recording its errors."""
        row = index + 1
        base = f"operations[{index}]"
        errors = self._errors
        before = errors.total

        user = op.user.strip()
        if self._cell_ok(op.user, row, f"{base}.user"):
            problem = user_problem(user)
            if problem:
                errors.add(problem, row, f"{base}.user", user)
            else:
                first = self._seen.add(user, row)
                if first is not None:
                    errors.add(
                        f"user {_q(user)} appears more than once: first in operations[{first - 1}]; give each "
                        "user one operation (one operation can both add and remove licenses)",
                        row,
                        f"{base}.user",
                        user,
                    )

        adds: list[LicenseAdd] = []
        added_ids: set[str] = set()
        add_names: list[str] = []
        plan_names: list[str] = []
        for j, item in enumerate(op.add_licenses or ()):
            path = f"{base}.addLicenses[{j}]"
            if item.sku is not None and item.sku_id is not None:
                errors.add(f'{path}: give "sku" or "skuId", not both', row, path, None)
                continue
            text = item.sku if item.sku is not None else item.sku_id
            if text is None:
                errors.add(f'{path}: give "sku" (a skuPartNumber or skuId) or "skuId"', row, path, None)
                continue
            field = "sku" if item.sku is not None else "skuId"
            add_names.append(text.strip())
            sku = self._sku(text, row, f"{path}.{field}")
            if sku is None:
                continue
            if sku.sku_id in added_ids:
                errors.add(
                    f"license {sku.part_number} is listed twice in addLicenses; list it once",
                    row,
                    f"{path}.{field}",
                    text,
                )
                continue
            added_ids.add(sku.sku_id)
            disabled: list[str] = []
            for k, plan in enumerate(item.disabled_plans or ()):
                plan_path = f"{path}.disabledPlans[{k}]"
                if not self._cell_ok(plan, row, plan_path):
                    continue
                plan_names.append(plan.strip())
                try:
                    hits = self._catalog.resolve_plan(plan, [sku])
                except UnknownName as exc:
                    errors.add(exc.message, row, plan_path, plan)
                    continue
                disabled.extend(p for _, p in hits if p not in disabled)
            adds.append(LicenseAdd(sku.sku_id, tuple(disabled)))

        removes: list[str] = []
        remove_names: list[str] = []
        for j, text in enumerate(op.remove_licenses or ()):
            path = f"{base}.removeLicenses[{j}]"
            remove_names.append(text.strip())
            sku = self._sku(text, row, path)
            if sku is None:
                continue
            if sku.sku_id in added_ids:
                errors.add(
                    f"license {sku.part_number} is both added and removed in this operation; keep it in one list only",
                    row,
                    path,
                    text,
                )
            elif sku.sku_id not in removes:
                removes.append(sku.sku_id)

        location: str | None = None
        if op.usage_location is not None and op.usage_location.strip():
            path = f"{base}.usageLocation"
            if self._cell_ok(op.usage_location, row, path):
                problem = usage_location_problem(op.usage_location)
                if problem:
                    errors.add(problem.replace("usage_location", "usageLocation", 1), row, path, op.usage_location)
                else:
                    location = op.usage_location.strip().upper()

        extra: list[tuple[str, str]] = []
        for name, value in (op.extra or {}).items():
            path = f"{base}.extra.{name}"
            if self._cell_ok(name, row, path) and self._cell_ok(value, row, path):
                extra.append((name, value))

        if not (op.add_licenses or op.remove_licenses or (op.usage_location or "").strip()):
            errors.add(
                "operation changes nothing: give addLicenses, removeLicenses or usageLocation",
                row,
                base,
                None,
            )
        if errors.total != before:
            return None
        source = [
            ("add", ";".join(add_names)),
            ("remove", ";".join(remove_names)),
            ("disabled_plans", ";".join(dict.fromkeys(plan_names))),
            ("usage_location", location or ""),
        ]
        return Operation(
            row=row,
            user=user,
            add=tuple(adds),
            remove=tuple(removes),
            usage_location=location,
            extra=tuple(extra),
            source=tuple((k, v) for k, v in source if v),
        )
