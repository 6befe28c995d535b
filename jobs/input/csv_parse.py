"""A CSV job file streamed into Operations: header, then each data row checked field by field."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from jobs.input.csv_header import Header, Role, detect_delimiter, read_header
from jobs.input.csv_lines import HEADER_CAP, LineReader, Overflow, Records, overflow_error
from jobs.input.csv_text import Utf8Text
from jobs.input.errors import ErrorLog, Fatal
from jobs.input.licenses import AddName, Licenses, Name, resolve_licenses
from jobs.input.rules import CONTROL_CHARS, CSV_WORDING, Limits, cell_problem, usage_location_problem
from jobs.input.users import UserCheck
from jobs.models import FORMULA_START, SOURCE_COLUMNS, FieldError, Operation
from jobs.skus import SkuCatalog

_LIST_SPLIT_RE = re.compile(r"[;|]")
# A control character anywhere, or a cell (cells joined by newlines) starting like a formula.
_SUSPECT_RE = re.compile(rf"{CONTROL_CHARS}|\n[{re.escape(''.join(sorted(FORMULA_START)))}]")
_LICENSE_CACHE_SIZE = 4096
_NO_ROLES: frozenset[Role] = frozenset()


def parse_csv(chunks: Iterable[bytes], catalog: SkuCatalog, limits: Limits) -> CsvParse:
    """Start a streaming parse of a CSV job file; iterate the result for Operations."""
    return CsvParse(chunks, catalog, limits)


def _split_names(cell: str) -> list[str]:
    """The names in a `;`- or `|`-separated cell, trimmed, empties dropped."""
    return [n for n in (p.strip() for p in _LIST_SPLIT_RE.split(cell)) if n]


class CsvParse:
    """A streaming parse of a CSV job file: iterate once for Operations, then read `errors` and `status_code`.

    Operations are yielded only while no error has been found; parsing goes on to report every error.
    """

    def __init__(self, chunks: Iterable[bytes], catalog: SkuCatalog, limits: Limits) -> None:
        self._chunks = chunks
        self._catalog = catalog
        self._limits = limits
        self._errors = ErrorLog()
        self._started = False
        self.status_code = 422

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
        return self._run()

    def _run(self) -> Iterator[Operation]:
        try:
            yield from self._parse()
        except Fatal as fatal:
            self._errors.add_fatal(fatal.error)
            self.status_code = fatal.status_code

    def _parse(self) -> Iterator[Operation]:
        lines = LineReader(iter(Utf8Text(self._chunks, self._limits.max_upload_bytes)), HEADER_CAP)
        records, header, delimiter = self._open(lines)
        rows = _Rows(header, delimiter, self._catalog, self._limits, self._errors)
        for record in records:
            operation = rows.check(record, records.row)
            if operation is not None:
                yield operation
        if rows.count == 0:
            raise Fatal(FieldError("the file has a header but no data rows; add one row per user below the header"))

    def _open(self, lines: LineReader) -> tuple[Records, Header, str]:
        """The records after the header, the header, and the delimiter."""
        try:
            first = lines.first_line()
        except Overflow:
            raise Fatal(overflow_error(lines)) from None
        if first is None:
            raise Fatal(
                FieldError(
                    "the file is empty; the first line must be a header naming a user column (e.g. user,add,remove)"
                )
            )
        delimiter = detect_delimiter(first, lines.line + 1)
        records = Records(lines, delimiter)
        names = next(records, [])  # a record always follows: first_line() found content
        header = read_header(names, records.row, self._limits.max_cell_chars)
        records.start_rows(header.labels, self._limits.max_cell_chars)
        return records, header, delimiter


class _Rows:
    """The data rows under one header, each checked field by field."""

    def __init__(self, header: Header, delimiter: str, catalog: SkuCatalog, limits: Limits, errors: ErrorLog) -> None:
        roles, labels = header.roles, header.labels
        self._header = header
        self._delimiter = delimiter
        self._catalog = catalog
        self._limits = limits
        self._errors = errors
        self._users = UserCheck(CSV_WORDING, delimiter)
        self._width = len(roles)
        # Records are fitted to width + 1 cells: index width is always "", for absent columns.
        self._padding = [""] * (self._width + 1)
        self._user_at, self._add_at, self._remove_at, self._plans_at, self._location_at = (
            header.index(role) for role in (Role.USER, Role.ADD, Role.REMOVE, Role.DISABLED_PLANS, Role.USAGE_LOCATION)
        )
        self._extra_at = [(i, labels[i]) for i, role in enumerate(roles) if role is Role.EXTRA]
        self._source_at = [(c, header.index(Role(c))) for c in SOURCE_COLUMNS if c in roles]
        self._checked_at = [i for i, role in enumerate(roles) if role is not Role.IGNORED]
        self._blank_at = [i for i, role in enumerate(roles) if role is Role.BLANK]
        self._all_checked = len(self._checked_at) == self._width
        self._license_cache: dict[tuple[str, str, str], Licenses] = {}
        self.count = 0  # data rows seen

    def check(self, record: list[str], row: int) -> Operation | None:
        """The Operation of the record at line `row` while the file has no error so far, else None."""
        if not self._fit(record, row):
            return None
        refused = self._refused_cells(record, row)
        user = self._user(record, row, refused)
        licenses = self._licenses(record, row, refused)
        location = self._usage_location(record, row, refused)
        if not (licenses.add or licenses.remove or location or self._names_licenses(record)):
            self._errors.add(
                "row changes nothing: give licenses in add or remove, or a usage_location", row, None, None
            )
        if self._errors.total:
            return None
        return Operation(
            row=row,
            user=user,
            add=licenses.add,
            remove=licenses.remove,
            usage_location=location.upper() or None,
            extra=tuple([(label, record[i]) for i, label in self._extra_at]),
            source=tuple([(c, record[i]) for c, i in self._source_at]),
        )

    def _fit(self, record: list[str], row: int) -> bool:
        """Cut or pad `record` to the header's width plus one empty cell; False for a blank line."""
        width = self._width
        size = len(record)
        if size <= width:
            if not "".join(record).strip():
                return False
            record += self._padding[size:]
        else:
            surplus = [c for c in record[width:] if c.strip()]
            if not surplus and not "".join(record).strip():
                return False
            del record[width:]
            record.append("")
            if surplus:
                self._errors.add(
                    f"row has {size} cells but the header has {width} columns; quote cells that "
                    f'contain "{self._delimiter}"',
                    row,
                    None,
                    surplus[0],
                )
        self.count += 1
        if self.count > self._limits.max_rows:
            raise Fatal(
                FieldError(
                    f"the file has more than {self._limits.max_rows:,} data rows, the limit for one job; split it "
                    "into several files",
                    row=row,
                )
            )
        return True

    def _refused_cells(self, record: list[str], row: int) -> frozenset[Role]:
        """The roles of the cells refused whatever their column (long, control characters, formulas)."""
        # One scan of the whole record; only a suspicious record is checked cell by cell.
        cells = record if self._all_checked else [record[i] for i in self._checked_at]
        if (
            max(map(len, cells)) > self._limits.max_cell_chars
            or _SUSPECT_RE.search("\n" + "\n".join(cells))
            or (self._blank_at and any(record[i].strip() for i in self._blank_at))
        ):
            return self._check_cells(record, row)
        return _NO_ROLES

    def _check_cells(self, record: list[str], row: int) -> frozenset[Role]:
        """Record an error for each refused cell; the roles of those cells."""
        refused: set[Role] = set()
        for i, role in enumerate(self._header.roles):
            cell, label = record[i], self._header.labels[i]
            if role is Role.IGNORED or not cell:
                continue
            if role is Role.BLANK:
                if cell.strip():
                    message = f"{label} has a value but no header name; name the column or remove the value"
                    self._errors.add(message, row, label, cell)
                continue
            problem = cell_problem(cell, self._limits.max_cell_chars)
            if problem:
                self._errors.add(f"{label} {problem}", row, label, cell)
                refused.add(role)
        return frozenset(refused)

    def _user(self, record: list[str], row: int, refused: frozenset[Role]) -> str:
        user = record[self._user_at].strip()
        if Role.USER not in refused:
            problem = self._users.problem(user, row)
            if problem:
                self._errors.add(problem, row, Role.USER.value, user)
        return user

    def _licenses(self, record: list[str], row: int, refused: frozenset[Role]) -> Licenses:
        add_cell = "" if Role.ADD in refused else record[self._add_at]
        remove_cell = "" if Role.REMOVE in refused else record[self._remove_at]
        # Plans are checked against the added SKUs: not at all when the add cell is refused.
        plans_cell = "" if refused & {Role.ADD, Role.DISABLED_PLANS} else record[self._plans_at]
        key = (add_cell, remove_cell, plans_cell)
        licenses = self._license_cache.get(key)
        if licenses is None:
            licenses = resolve_licenses(
                self._catalog,
                CSV_WORDING,
                [AddName(Name(n, Role.ADD.value)) for n in _split_names(add_cell)],
                [Name(n, Role.REMOVE.value) for n in _split_names(remove_cell)],
                [Name(n, Role.DISABLED_PLANS.value) for n in _split_names(plans_cell)],
            )
            if len(self._license_cache) >= _LICENSE_CACHE_SIZE:
                self._license_cache.clear()
            self._license_cache[key] = licenses
        for error in licenses.errors:
            self._errors.add_at(row, error)
        return licenses

    def _usage_location(self, record: list[str], row: int, refused: frozenset[Role]) -> str:
        """The usage location cell, trimmed; checked unless empty or refused."""
        cell = record[self._location_at].strip()
        if not cell or Role.USAGE_LOCATION in refused:
            return cell
        problem = usage_location_problem(cell, CSV_WORDING.usage_location)
        if problem:
            self._errors.add(problem, row, Role.USAGE_LOCATION.value, cell)
        return cell

    def _names_licenses(self, record: list[str]) -> bool:
        """Whether the add or remove cell names any license (resolvable or not)."""
        return bool(_split_names(record[self._add_at]) or _split_names(record[self._remove_at]))
