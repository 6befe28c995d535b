"""A JSON job body validated into Operations, with the same rules as a CSV row."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from jobs.input.dates import row_dates
from jobs.input.errors import ErrorLog
from jobs.input.json_scan import reject
from jobs.input.json_shape import AddLicenseIn, JobBody, OperationIn, load_job
from jobs.input.licenses import AddName, Name, resolve_licenses
from jobs.input.rules import JSON_WORDING, Limits, cell_problem, clip, quoted, usage_location_problem
from jobs.input.users import UserCheck
from jobs.models import Assignment, FieldError, InputRejected, JobOptions, LicenseMode, Operation, SeatPolicy
from jobs.skus import SkuCatalog, is_guid, normalize_name


def parse_json(
    body: bytes, catalog_for: Callable[[str], SkuCatalog], limits: Limits, mode: LicenseMode | None = None
) -> tuple[str, list[Operation], JobOptions]:
    """Parse and validate a JSON job body into (tenant, operations, options); InputRejected on any error.

    `mode` is the one the query chose, if any; the body may choose it too (the same one).
    """
    parse = read_json_job(body, catalog_for, limits, mode)
    operations = list(parse)
    if parse.total_errors:
        raise InputRejected(parse.errors, parse.total_errors, parse.status_code)
    return parse.tenant, operations, parse.options


def read_json_job(body: bytes, catalog_for: Callable[[str], SkuCatalog], limits: Limits,
                  mode: LicenseMode | None = None) -> JsonParse:
    """Check a JSON job body's syntax, limits, top-level fields and tenant; iterate the result for Operations.

    `catalog_for` raises KeyError for an unknown tenant (and may refuse one the caller may not use):
    the tenant is checked before any operation is read. `mode` is the one the query chose, if any; the
    body may choose it too (the same one).
    """
    job = load_job(body, limits)
    in_body = LicenseMode.parse(job.head.mode) if job.head.mode is not None else None
    if mode is not None and in_body is not None and mode is not in_body:
        reject(f"mode is given twice, differently: {mode.value} in the query, {in_body.value} in the body",
               column="mode", value=job.head.mode)
    chosen = mode or in_body
    try:
        catalog = catalog_for(job.head.tenant)
    except KeyError:
        reject(
            f"unknown tenant {quoted(job.head.tenant)}: no tenant profile has this name; use one configured on the "
            "server",
            column="tenant",
            value=clip(job.head.tenant),
        )
    if not job.operations:
        reject("operations is empty; give at least one operation", column="operations")
    return JsonParse(job, catalog, limits, chosen)


class JsonParse:
    """A JSON job body being read: its tenant and options known, its operations yielded one at a time.

    Iterate once for Operations, then read `errors`. As for a CSV, operations are yielded only
    while no error has been found, and reading goes on to report every error; shape errors (wrong
    types, unknown fields), when there are any, are reported instead of the value errors.
    """

    status_code = 422

    def __init__(self, job: JobBody, catalog: SkuCatalog, limits: Limits, mode: LicenseMode | None) -> None:
        self._job = job
        self._shape_errors = ErrorLog()
        self._value_errors = ErrorLog()
        self._checks = _OperationChecks(catalog, limits.max_cell_chars, self._value_errors, mode or LicenseMode.ADD)
        self.tenant = job.head.tenant
        self.options = JobOptions(dry_run=job.head.dry_run, seat_policy=SeatPolicy(job.head.on_seat_shortage),
                                  callback_url=job.head.callback_url, mode=mode,
                                  assignment=Assignment(job.head.assignment) if job.head.assignment else None)

    @property
    def errors(self) -> list[FieldError]:
        """The errors kept, in body order."""
        return self._shape_errors.kept if self._shape_errors.total else self._value_errors.kept

    @property
    def total_errors(self) -> int:
        """How many errors were found in all."""
        return self._shape_errors.total or self._value_errors.total

    def __iter__(self) -> Iterator[Operation]:
        for index, item in enumerate(self._job.items(self._shape_errors)):
            if item is None or self._shape_errors.total:
                continue  # with shape errors, only the shapes of the rest are checked
            operation = self._checks.operation(index, item)
            if operation is not None and not self._value_errors.total:
                yield operation


class _OperationChecks:
    """The rules of a CSV row, applied to each JSON operation in turn."""

    def __init__(self, catalog: SkuCatalog, max_chars: int, errors: ErrorLog, mode: LicenseMode) -> None:
        self._catalog = catalog
        self._max_chars = max_chars
        self._errors = errors
        self._users = UserCheck(JSON_WORDING)
        self._mode = mode

    def operation(self, index: int, op: OperationIn) -> Operation | None:
        """The Operation for `operations[index]`, or None after recording its errors."""
        row, base = index + 1, f"operations[{index}]"
        before = self._errors.total
        user = self._user(op.user, row, f"{base}.user")
        adds = self._adds(op.add_licenses or (), row, f"{base}.addLicenses")
        removes = self._names(op.remove_licenses or (), row, f"{base}.removeLicenses")
        licenses = resolve_licenses(self._catalog, JSON_WORDING, adds, removes)
        for error in licenses.errors:
            self._errors.add_at(row, error)
        location = self._usage_location(op.usage_location, row, f"{base}.usageLocation")
        extra = self._extra(op.extra or {}, row, f"{base}.extra")
        effective, last_day, problem = row_dates(op.effective_date or "", op.end_date or "",
                                                 adds=bool(op.add_licenses))
        if problem is not None:
            field = "endDate" if problem[0] == "end_date" else "effectiveDate"
            self._errors.add(problem[2], row, f"{base}.{field}", problem[1])
        if self._mode is LicenseMode.EXACT:
            self._exact(op, row, base)
        elif not (op.add_licenses or op.remove_licenses or location):
            message = "operation changes nothing: give addLicenses, removeLicenses or usageLocation"
            self._errors.add(message, row, base, None)
        if self._errors.total != before:
            return None
        plans = dict.fromkeys(p.text.strip() for a in adds for p in a.plans)
        source = [
            ("add", ";".join(a.name.text.strip() for a in adds)),
            ("remove", ";".join(n.text.strip() for n in removes)),
            ("disabled_plans", ";".join(plans)),
            ("usage_location", location.upper()),
        ]
        return Operation(
            row=row,
            user=user,
            add=licenses.add,
            remove=licenses.remove,
            usage_location=location.upper() or None,
            extra=extra,
            source=tuple((k, v) for k, v in source if v),
            mode=self._mode,
            effective=effective,
            last_day=last_day,
        )

    def _exact(self, op: OperationIn, row: int, base: str) -> None:
        """Under mode=exact, addLicenses is every license the user should hold: given, and alone."""
        if op.remove_licenses:
            self._errors.add("mode=exact takes the full list of licenses in addLicenses; removeLicenses contradicts "
                             "it (the licenses not listed are removed)", row, f"{base}.removeLicenses", None)
        if op.add_licenses is None:
            self._errors.add("mode=exact needs addLicenses: every license the user should hold ([] for none)", row,
                             f"{base}.addLicenses", None)

    def _cell_ok(self, value: str, row: int, path: str) -> bool:
        """Whether `value` passes the checks every CSV cell gets; records the error if not."""
        problem = cell_problem(value, self._max_chars)
        if problem:
            self._errors.add(f"{path} {problem}", row, path, value)
            return False
        return True

    def _user(self, text: str, row: int, path: str) -> str:
        user = text.strip()
        if self._cell_ok(text, row, path):
            problem = self._users.problem(user, row)
            if problem:
                self._errors.add(problem, row, path, user)
        return user

    def _adds(self, items: Sequence[AddLicenseIn], row: int, path: str) -> list[AddName]:
        """The licenses to add that are well-formed, each with its plans to disable."""
        adds: list[AddName] = []
        for j, item in enumerate(items):
            name = self._sku_name(item, row, f"{path}[{j}]")
            if name is not None:
                plans = self._names(item.disabled_plans or (), row, f"{path}[{j}].disabledPlans")
                adds.append(AddName(name, tuple(plans)))
        return adds

    def _sku_name(self, item: AddLicenseIn, row: int, path: str) -> Name | None:
        """The license an addLicenses item names, if given once as a safe value (a GUID under skuId)."""
        if item.sku is not None and item.sku_id is not None:
            self._errors.add(f'{path}: give "sku" or "skuId", not both', row, path, None)
            return None
        if item.sku is not None:
            name = Name(item.sku, f"{path}.sku")
        elif item.sku_id is not None:
            name = Name(item.sku_id, f"{path}.skuId")
        else:
            self._errors.add(f'{path}: give "sku" (a skuPartNumber or skuId) or "skuId"', row, path, None)
            return None
        if not self._cell_ok(name.text, row, name.column):
            return None
        if item.sku_id is not None and not is_guid(normalize_name(item.sku_id)):
            self._errors.add(
                f"{name.column} {quoted(item.sku_id.strip())} is not a skuId (a GUID such as "
                '6fd2c87f-b296-42f0-b197-1e91e994b900); give a skuPartNumber in "sku" instead',
                row,
                name.column,
                item.sku_id.strip(),
            )
            return None
        return name

    def _names(self, texts: Sequence[str], row: int, path: str) -> list[Name]:
        """The items of a list of license or plan names that pass the cell checks."""
        return [Name(text, f"{path}[{j}]") for j, text in enumerate(texts) if self._cell_ok(text, row, f"{path}[{j}]")]

    def _usage_location(self, text: str | None, row: int, path: str) -> str:
        """The usageLocation, trimmed ("" when absent); checked unless empty."""
        value = (text or "").strip()
        if text and value and self._cell_ok(text, row, path):
            problem = usage_location_problem(value, JSON_WORDING.usage_location)
            if problem:
                self._errors.add(problem, row, path, value)
        return value

    def _extra(self, extra: dict[str, str], row: int, path: str) -> tuple[tuple[str, str], ...]:
        """The extra fields, each name and value checked like a CSV cell."""
        pairs = []
        for name, value in extra.items():
            where = f"{path}.{name}"
            if self._cell_ok(name, row, where) and self._cell_ok(value, row, where):
                pairs.append((name, value))
        return tuple(pairs)
