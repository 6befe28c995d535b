"""A CSV job file streamed into Operations: preamble, header, then each data row checked field by field.

How the file was read (encoding, skipped lines, what each column means) is kept in `reading`.
A file that lists what users hold (an admin center export, `Unlicensed` cells) is read only under
a mode the caller chose: add the listed licenses, or make each user hold exactly them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from jobs.input.csv_header import ASSIGNMENT_DETAILS, Header, Layout, Role, column_key, detect_delimiter, read_header
from jobs.input.csv_layout import Preamble, is_example_row, skip_preamble
from jobs.input.csv_lines import HEADER_CAP, LineReader, Overflow, Records, overflow_error
from jobs.input.csv_text import CsvText
from jobs.input.dates import row_dates
from jobs.input.errors import ErrorLog, Fatal
from jobs.input.licenses import AddName, Licenses, Name, resolve_licenses
from jobs.input.reading import Reading
from jobs.input.rules import CONTROL_CHARS, CSV_WORDING, Limits, cell_problem, clip, quoted, usage_location_problem
from jobs.input.users import UserCheck
from jobs.models import FORMULA_START, SOURCE_COLUMNS, FieldError, JobOptions, LicenseMode, Operation
from jobs.skus import SkuCatalog, UnknownName

_LIST_SPLIT_RE = re.compile(r"[;|]")
# A control character anywhere, or a cell (cells joined by newlines) starting like a formula.
_SUSPECT_RE = re.compile(rf"{CONTROL_CHARS}|\n[{re.escape(''.join(sorted(FORMULA_START)))}]")
_LICENSE_CACHE_SIZE = 4096
_NO_ROLES: frozenset[Role] = frozenset()
_UNREAD = frozenset({Role.IGNORED, Role.SECRET})  # cells neither checked nor kept
UNLICENSED = "unlicensed"  # the admin center export's word for "holds no license"
# Cells of each kept column checked for license names (the first non-empty ones): a license column
# under a name the service does not read shows in its first rows.
LICENSE_SCAN_CELLS = 1000
_ACTIONS = {"add": Role.ADD, "assign": Role.ADD, "remove": Role.REMOVE, "unassign": Role.REMOVE,
            "removelicense": Role.REMOVE, "removelicenses": Role.REMOVE}
_MODE_CHOICE = (
    "choose mode=exact (each user ends up holding exactly the listed licenses: the others they hold directly are "
    "removed; a dry run shows who loses what) or mode=add (the listed licenses a user lacks are added, nothing is "
    "removed)"
)


def parse_csv(chunks: Iterable[bytes], catalog: SkuCatalog, limits: Limits,
              options: JobOptions = JobOptions()) -> CsvParse:
    """Start a streaming parse of a CSV job file; iterate the result for Operations."""
    return CsvParse(chunks, catalog, limits, options)


def _split_names(cell: str) -> list[str]:
    """The names in a `;`- or `|`-separated cell, trimmed, empties dropped."""
    return [n for n in (p.strip() for p in _LIST_SPLIT_RE.split(cell)) if n]


class CsvParse:
    """A streaming parse of a CSV job file: iterate once for Operations, then read `errors` and `status_code`.

    Operations are yielded only while no error has been found; parsing goes on to report every error.
    `reading` says how the file was read, once its header has been.
    """

    def __init__(self, chunks: Iterable[bytes], catalog: SkuCatalog, limits: Limits,
                 options: JobOptions = JobOptions()) -> None:
        self._chunks = chunks
        self._catalog = catalog
        self._limits = limits
        self._options = options
        self._errors = ErrorLog()
        self._started = False
        self.status_code = 422
        self.reading = Reading("csv", mode=(options.mode or LicenseMode.ADD).value)
        self.kept_columns: tuple[str, ...] = ()

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
        text = CsvText(self._chunks, self._limits.max_upload_bytes)
        lines = LineReader(iter(text), HEADER_CAP)
        records, header, preamble = self._open(lines, text)
        rows = _Rows(header, self.reading, self._catalog, self._limits, self._errors, self._options,
                     example_row=preamble.entra_version is not None or header.layout is Layout.ENTRA_TEMPLATE)
        # With an Action column, a user's adjacent rows are one operation: it is yielded once the next user's row
        # (or the end) shows it complete.
        merge = header.has(Role.ACTION)
        pending: Operation | None = None
        for record in records:
            operation = rows.check(record, records.row)
            if operation is None:
                continue
            if not merge:
                yield operation
            elif pending is not None and pending.user.lower() == operation.user.lower():
                pending = rows.merge(pending, operation)
            else:
                if pending is not None:
                    yield pending
                pending = operation
        if pending is not None and not self._errors.total:
            yield pending
        if rows.count == 0:
            raise Fatal(FieldError("the file has a header but no data rows; add one row per user below the header"))

    def _open(self, lines: LineReader, text: CsvText) -> tuple[Records, Header, Preamble]:
        """The records after the header, the header, and what was skipped above it; fills in `reading`."""
        try:
            first, preamble = skip_preamble(lines)
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
        header = read_header(names, records.row, self._limits.max_cell_chars, self._limits.max_kept_columns)
        reading = self.reading
        reading.encoding, reading.delimiter = text.encoding, delimiter
        reading.layout = _layout_name(header, preamble)
        reading.notes.extend(preamble.notes)
        self._check_intent(header, records.row)
        reading.columns = [(name or header.labels[i], _read_as(header, i, self._options))
                           for i, name in enumerate(header.names)]
        self.kept_columns = tuple(label for role, label in zip(header.roles, header.labels, strict=True)
                                  if role is Role.EXTRA)
        records.start_rows(header.labels, self._limits.max_cell_chars)
        return records, header, preamble

    def _check_intent(self, header: Header, row: int) -> None:
        """Refuse headers whose meaning depends on a choice not made, or that contradict the mode."""
        mode = self._options.mode
        held = header.names[header.index(Role.HELD)] if header.has(Role.HELD) else ""
        if held and mode is None:
            raise Fatal(FieldError(
                f'this file lists the licenses each user holds (column "{held}", layout {_layout_label(header)}), '
                f"not changes to make; {_MODE_CHOICE}", row=row, column=held))
        if header.has(Role.ACTION) and header.has(Role.REMOVE):
            raise Fatal(FieldError(
                "the file has an Action column (Add or Remove for each row's licenses) and a remove column; keep "
                "one of them", row=row, column=Role.ACTION.value))
        if header.has(Role.ACTION) and not header.has(Role.ADD):
            raise Fatal(FieldError(
                "the Action column needs a column of licenses beside it (SkuPartNumber, AccountSkuId, licenses, "
                "...)", row=row, column=Role.ACTION.value))
        if mode is LicenseMode.EXACT:
            for role in (Role.REMOVE, Role.ACTION):
                if header.has(role):
                    raise Fatal(FieldError(
                        f'mode=exact reads each row as every license its user should hold, so the column '
                        f'"{header.names[header.index(role)]}" contradicts it; drop the column or use mode=add',
                        row=row, column=role.value))
            if not (header.has(Role.ADD) or header.has(Role.HELD)):
                raise Fatal(FieldError(
                    "mode=exact needs a column of licenses (licenses, SkuPartNumber, Licenses, Assigned Products, "
                    "...)", row=row, column=Role.ADD.value))
        by_name = {name.lower(): i for i, name in enumerate(header.names)}
        for wanted in self._options.keep_columns:
            at = by_name.get(wanted.strip().lower())
            if at is None:
                raise Fatal(FieldError(
                    f"keep_columns names {quoted(wanted)}, which is not a column of the file", row=row,
                    column="keep_columns", value=clip(wanted)))
            if header.roles[at] is not Role.EXTRA:
                raise Fatal(FieldError(
                    f"keep_columns names {quoted(wanted)}, which is read as {header.labels[at]}; keep_columns is "
                    "for columns the job does not read", row=row, column="keep_columns", value=clip(wanted)))


def _layout_name(header: Header, preamble: Preamble) -> str:
    if header.layout is not Layout.PLAIN:
        return header.layout.value
    if preamble.entra_version is not None:
        return Layout.ENTRA_TEMPLATE.value
    if preamble.powershell_type:
        return "powershell_export"
    return Layout.PLAIN.value


def _layout_label(header: Header) -> str:
    return {Layout.ADMIN_EXPORT: "Microsoft 365 admin center user export",
            Layout.USAGE_REPORT: "Microsoft 365 usage report"}.get(header.layout, header.layout.value)


def _read_as(header: Header, i: int, options: JobOptions) -> str:
    """What column `i` is read as, in the words of the reading report."""
    role = header.roles[i]
    exact = options.mode is LicenseMode.EXACT
    if role is Role.USER:
        words = "user"
    elif role in (Role.ADD, Role.HELD) and exact:
        words = "licenses to hold (mode=exact: the others are removed)"
    elif role is Role.HELD:
        words = "add (the licenses held, mode=add)"
    elif role is Role.ADD and header.has(Role.ACTION):
        words = "add or remove, by the Action column"
    elif role is Role.ACTION:
        words = "action (Add or Remove)"
    elif role is Role.EFFECTIVE_DATE:
        words = "effective date (ISO date or date-time; a date is a day in the tenant's timezone)"
    elif role is Role.END_DATE:
        words = "last day (the row's removals run at the end of that day, in the tenant's timezone)"
    elif role is Role.EXTRA and _describes_held(header, i):
        words = "kept (how the held licenses are assigned; not read)"
    elif role is Role.EXTRA:
        acknowledged = header.names[i].lower() in {c.strip().lower() for c in options.keep_columns}
        words = "kept (keep_columns)" if acknowledged else "kept"
    elif role is Role.IGNORED:
        words = "ignored (a column of the results CSV)"
    elif role is Role.SECRET:
        words = "ignored (a password: never stored)"
    elif role is Role.BLANK:
        words = "ignored (no name: must stay empty)"
    else:
        words = role.value
    if header.by_property and header.by_property[i] and role not in (Role.EXTRA, *_UNREAD):
        words += " (by its [property])"
    return words


def _describes_held(header: Header, i: int) -> bool:
    """Whether column `i` is the admin center export's description of how the held licenses are assigned."""
    return header.layout is Layout.ADMIN_EXPORT and column_key(header.names[i])[0] == ASSIGNMENT_DETAILS


class _Rows:
    """The data rows under one header, each checked field by field."""

    def __init__(self, header: Header, reading: Reading, catalog: SkuCatalog, limits: Limits, errors: ErrorLog,
                 options: JobOptions, *, example_row: bool) -> None:
        roles, labels = header.roles, header.labels
        self._header = header
        self._reading = reading
        self._catalog = catalog
        self._limits = limits
        self._errors = errors
        self._chosen_mode = options.mode
        self._mode = options.mode or LicenseMode.ADD
        self._example_row = example_row
        self._users = UserCheck(CSV_WORDING, reading.delimiter, adjacent=header.has(Role.ACTION))
        self._width = len(roles)
        # Records are fitted to width + 1 cells: index width is always "", for absent columns.
        self._padding = [""] * (self._width + 1)
        self._licenses_role = Role.HELD if header.has(Role.HELD) else Role.ADD
        self._user_at, self._add_at, self._remove_at, self._plans_at, self._location_at, self._action_at = (
            header.index(role) for role in (Role.USER, self._licenses_role, Role.REMOVE, Role.DISABLED_PLANS,
                                            Role.USAGE_LOCATION, Role.ACTION)
        )
        self._has_action = header.has(Role.ACTION)
        self._effective_at, self._end_at = header.index(Role.EFFECTIVE_DATE), header.index(Role.END_DATE)
        self._extra_at = [(i, labels[i]) for i, role in enumerate(roles) if role is Role.EXTRA]
        acknowledged = {c.strip().lower() for c in options.keep_columns}
        # Kept columns still checked for license names: position → non-empty cells checked so far.
        self._scanned = {i: 0 for i, label in self._extra_at
                         if label.lower() not in acknowledged and not _describes_held(header, i)}
        self._scan_cache: dict[str, str | None] = {}
        self._checked_at = [i for i, role in enumerate(roles) if role not in _UNREAD]
        self._blank_at = [i for i, role in enumerate(roles) if role is Role.BLANK]
        self._all_checked = len(self._checked_at) == self._width
        self._license_cache: dict[tuple[str, str, str, Role, bool], tuple[Licenses, tuple[FieldError, ...], bool]] = {}
        self._source_at = self._source_columns(header)
        self.count = 0  # data rows seen

    def check(self, record: list[str], row: int) -> Operation | None:
        """The Operation of the record at line `row` while the file has no error so far, else None."""
        if not self._fit(record, row):
            return None
        if self._example_row and self.count == 1 and is_example_row(record[0]):
            self.count = 0
            self._reading.notes.append(f"row {row}: Microsoft's example row (Example:) skipped")
            return None
        refused = self._refused_cells(record, row)
        user = self._user(record, row, refused)
        side = self._side(record, row, refused)
        licenses, unlicensed = self._licenses(record, row, refused, side)
        location = self._usage_location(record, row, refused)
        effective, last_day = self._dates(record, row, refused, bool(licenses.add))
        extra = self._kept(record, row)
        if not (licenses.add or licenses.remove or location or unlicensed or self._mode is LicenseMode.EXACT
                or self._names_licenses(record)):
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
            extra=extra,
            source=self._source(record, side),
            mode=self._mode,
            effective=effective,
            last_day=last_day,
        )

    def _dates(self, record: list[str], row: int, refused: frozenset[Role], adds: bool) -> tuple[str | None, bool]:
        """The row's effective date (or last day), an error noted when it has a wrong one."""
        if refused & {Role.EFFECTIVE_DATE, Role.END_DATE}:
            return None, False
        effective, last_day, problem = row_dates(record[self._effective_at], record[self._end_at],
                                                 adds=adds)
        if problem is not None:
            self._errors.add(problem[2], row, problem[0], problem[1])
        return effective, last_day

    def merge(self, first: Operation, then: Operation) -> Operation:
        """Two adjacent rows of one user (an Action file) as one operation; errors recorded at `then`'s row."""
        added = {a.sku_id for a in first.add}
        removed = set(first.remove)
        name = self._catalog.part_number
        for lic in then.add:
            if lic.sku_id in added or lic.sku_id in removed:
                self._twice(then, name(lic.sku_id), first.row)
        for sku in then.remove:
            if sku in removed or sku in added:
                self._twice(then, name(sku), first.row)
        if first.usage_location and then.usage_location and first.usage_location != then.usage_location:
            self._errors.add(
                f"usage_location {then.usage_location} differs from {first.usage_location} in row {first.row}, the "
                "same user's; give one", then.row, Role.USAGE_LOCATION.value, then.usage_location)
        if first.effective and then.effective and (first.effective, first.last_day) != (then.effective, then.last_day):
            self._errors.add(f"the date {then.effective} differs from {first.effective} in row {first.row}, the same "
                             "user's; give one", then.row, "end_date" if then.last_day else "effective_date",
                             then.effective)
        if (first.last_day and then.add) or (then.last_day and first.add):
            self._errors.add("end_date is a leaver's last day: the user's rows may only remove licenses", then.row,
                             "end_date", then.effective or first.effective)
        source = dict(first.source)
        for key, value in then.source:
            source[key] = f"{source[key]};{value}" if source.get(key) else value
        extra = dict(first.extra)
        for key, value in then.extra:
            extra.setdefault(key, value)
        return Operation(
            row=first.row, user=first.user, add=first.add + then.add, remove=first.remove + then.remove,
            usage_location=first.usage_location or then.usage_location, extra=tuple(extra.items()),
            source=tuple(source.items()), mode=first.mode, effective=first.effective or then.effective,
            last_day=first.last_day or then.last_day,
        )

    def _twice(self, op: Operation, shown: str, first_row: int) -> None:
        self._errors.add(f"license {shown} appears again for user {quoted(op.user)} (first in row {first_row}); "
                         "give each license of a user once", op.row, Role.ADD.value, shown)

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
                    f'contain "{self._reading.delimiter}"',
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
            if role in _UNREAD or not cell:
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

    def _side(self, record: list[str], row: int, refused: frozenset[Role]) -> Role:
        """Where the row's licenses go: add, or remove when its Action says so."""
        if not self._has_action or Role.ACTION in refused:
            return Role.ADD
        cell = record[self._action_at].strip()
        side = _ACTIONS.get(cell.lower().replace(" ", ""))
        if side is None:
            what = "is empty" if not cell else f"{quoted(cell)} is not an action"
            self._errors.add(f"action {what}: write Add (or Assign) or Remove (or Unassign, RemoveLicense)",
                             row, Role.ACTION.value, cell)
            return Role.ADD
        return side

    def _licenses(self, record: list[str], row: int, refused: frozenset[Role], side: Role) -> tuple[Licenses, bool]:
        """The row's resolved licenses, and whether its licenses cell says `Unlicensed`."""
        add_refused = self._licenses_role in refused
        add_cell = "" if add_refused else record[self._add_at]
        remove_cell = "" if Role.REMOVE in refused else record[self._remove_at]
        # Plans are checked against the added SKUs: not at all when the add cell is refused.
        plans_cell = "" if refused & {self._licenses_role, Role.DISABLED_PLANS} else record[self._plans_at]
        key = (add_cell, remove_cell, plans_cell, side, add_refused)
        cached = self._license_cache.get(key)
        if cached is None:
            cached = self._read_licenses(add_cell, remove_cell, plans_cell, side, add_refused, row)
            if len(self._license_cache) >= _LICENSE_CACHE_SIZE:
                self._license_cache.clear()
            self._license_cache[key] = cached
        licenses, errors, unlicensed = cached
        for error in errors:
            self._errors.add_at(row, error)
        return licenses, unlicensed

    def _read_licenses(self, add_cell: str, remove_cell: str, plans_cell: str, side: Role, add_refused: bool,
                       row: int) -> tuple[Licenses, tuple[FieldError, ...], bool]:
        """One set of license cells read (cached by the caller): licenses, errors without a row, `Unlicensed`.

        `row` only names where a file that needs a mode first says `Unlicensed` (that stops the parse).
        """
        errors: list[FieldError] = []
        label = self._add_label()
        unlicensed = add_cell.strip().lower() == UNLICENSED
        if unlicensed:
            if self._chosen_mode is None:
                raise Fatal(FieldError(
                    f"{label} says Unlicensed: this file lists the licenses each user holds, not changes to make; "
                    f"{_MODE_CHOICE}", row=row, column=label, value="Unlicensed"))
            if side is Role.REMOVE:
                errors.append(FieldError("Unlicensed is not a license to remove; give the licenses to remove",
                                         None, label, "Unlicensed"))
            add_cell = ""
        elif self._mode is LicenseMode.EXACT and not add_cell.strip() and not add_refused:
            errors.append(FieldError(
                f"{label} is empty, and under mode=exact an empty list is ambiguous: write Unlicensed to remove every "
                "license the user holds directly, or leave the user out", None, label, ""))
        licenses, split_errors = self._resolve(add_cell, remove_cell, plans_cell, side)
        return licenses, (*errors, *split_errors, *licenses.errors), unlicensed

    def _add_label(self) -> str:
        return self._header.labels[self._add_at] if self._add_at < self._width else Role.ADD.value

    def _resolve(self, add_cell: str, remove_cell: str, plans_cell: str,
                 side: Role) -> tuple[Licenses, tuple[FieldError, ...]]:
        errors: list[FieldError] = []
        licenses_column = self._add_label()
        names = self._names(add_cell, Role.REMOVE.value if side is Role.REMOVE else licenses_column, errors)
        removes = self._names(remove_cell, Role.REMOVE.value, errors)
        if side is Role.REMOVE:
            names, removes = [], names + removes
        plans = [Name(n, Role.DISABLED_PLANS.value) for n in _split_names(plans_cell)]
        if side is Role.REMOVE and plans:
            errors.append(FieldError("disabled_plans applies to licenses a row adds; this row's action is Remove",
                                     None, Role.DISABLED_PLANS.value, plans_cell.strip()))
            plans = []
        licenses = resolve_licenses(self._catalog, CSV_WORDING, [AddName(n) for n in names], removes, plans)
        return licenses, tuple(errors)

    def _names(self, cell: str, column: str, errors: list[FieldError]) -> list[Name]:
        """The license names in a cell: `;`/`|`-separated, each maybe several joined by "+"."""
        names: list[Name] = []
        for piece in _split_names(cell):
            try:
                names.extend(Name(n, column) for n in self._catalog.split_joined(piece))
            except UnknownName as exc:
                errors.append(FieldError(exc.message, None, column, piece))
        return names

    def _usage_location(self, record: list[str], row: int, refused: frozenset[Role]) -> str:
        """The usage location cell, trimmed; checked unless empty or refused."""
        cell = record[self._location_at].strip()
        if not cell or Role.USAGE_LOCATION in refused:
            return cell
        problem = usage_location_problem(cell, CSV_WORDING.usage_location)
        if problem:
            self._errors.add(problem, row, Role.USAGE_LOCATION.value, cell)
        return cell

    def _kept(self, record: list[str], row: int) -> tuple[tuple[str, str], ...]:
        """The row's non-empty kept cells; refuses too much kept text, and license names in a kept column."""
        kept = tuple([(label, record[i]) for i, label in self._extra_at if record[i]])
        if not kept:
            return kept
        size = sum(len(value) for _, value in kept)
        if size > self._limits.max_kept_chars_per_row:
            self._errors.add(
                f"the kept columns of this row hold {size:,} characters; the limit is "
                f"{self._limits.max_kept_chars_per_row:,} (setting max_kept_chars_per_row): remove columns you do not "
                "need", row, None, None)
        if self._scanned:
            self._scan(record, row)
        return kept

    def _scan(self, record: list[str], row: int) -> None:
        """A kept column whose value names a subscribed license is refused: its licenses would go unread."""
        for i in list(self._scanned):
            cell = record[i].strip()
            if not cell:
                continue
            self._scanned[i] += 1
            if self._scanned[i] >= LICENSE_SCAN_CELLS:
                del self._scanned[i]
            if cell not in self._scan_cache:
                if len(self._scan_cache) >= _LICENSE_CACHE_SIZE:
                    self._scan_cache.clear()
                self._scan_cache[cell] = self._catalog.names_license(cell)
            part = self._scan_cache[cell]
            if part is not None:
                label = self._header.labels[i]
                raise Fatal(FieldError(
                    f'column "{label}" is not read (it would be kept and echoed in the results), but its value '
                    f"{quoted(cell)} names the license {part}: rename the column to add (or remove) if it lists "
                    f"licenses to assign, or submit with keep_columns={label} to keep it unread",
                    row=row, column=label, value=clip(cell)))

    def _names_licenses(self, record: list[str]) -> bool:
        """Whether the add or remove cell names any license (resolvable or not)."""
        return bool(_split_names(record[self._add_at]) or _split_names(record[self._remove_at]))

    @staticmethod
    def _source_columns(header: Header) -> list[tuple[str, int]]:
        """(results CSV column, position) of each column the row's `source` keeps, in SOURCE_COLUMNS order."""
        licenses = Role.HELD if header.has(Role.HELD) else Role.ADD
        roles = {Role.ADD.value: licenses, Role.REMOVE.value: Role.REMOVE,
                 Role.DISABLED_PLANS.value: Role.DISABLED_PLANS, Role.USAGE_LOCATION.value: Role.USAGE_LOCATION}
        return [(column, header.index(roles[column])) for column in SOURCE_COLUMNS if header.has(roles[column])]

    def _source(self, record: list[str], side: Role) -> tuple[tuple[str, str], ...]:
        """The row as written, under the results CSV's columns (add, remove, disabled_plans, usage_location).

        A row whose Action is Remove lists its licenses under remove.
        """
        if side is Role.REMOVE:
            return tuple([(Role.REMOVE.value if column == Role.ADD.value else column, record[i])
                          for column, i in self._source_at])
        return tuple([(column, record[i]) for column, i in self._source_at])
