"""The shape of a JSON job body: size, encoding, nesting and field types, before any rule about values.

The top-level fields are checked at once; the operations one at a time as they are read (jobs.input.json_scan).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from jobs.input.errors import ErrorLog
from jobs.input.json_scan import BodyLayout, Path, json_path, operation_items, reject, row_of, scan_body
from jobs.input.rules import Limits, clip, size_text
from jobs.models import InputRejected


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
    # ISO date or date-time (jobs.input.dates): when the row takes effect, or a leaver's last day.
    effective_date: str | None = Field(
        default=None, alias="effectiveDate",
        validation_alias=AliasChoices("effectiveDate", "effective_date", "startDate", "employeeHireDate"))
    end_date: str | None = Field(
        default=None, alias="endDate", validation_alias=AliasChoices("endDate", "end_date", "employeeLeaveDateTime"))


class JobIn(_In):
    """A JSON job body."""

    tenant: str
    operations: list[OperationIn]
    dry_run: bool = False
    on_seat_shortage: Literal["fail", "wait"] = "fail"
    callback_url: str | None = None
    mode: Literal["add", "exact", "sync"] | None = None
    assignment: Literal["any", "direct"] | None = None


_MODELS_BY_DEPTH: dict[tuple[str, ...], type[BaseModel]] = {
    (): JobIn,
    ("operations", "#"): OperationIn,
    ("operations", "#", "addLicenses", "#"): AddLicenseIn,
}


@dataclass(frozen=True)
class JobBody:
    """A JSON job body whose encoding, syntax, limits and top-level fields are checked; its operations to read."""

    head: JobIn  # the top-level fields (`operations` left empty: they are read by `items`)
    operations: int  # how many there are
    text: str
    layout: BodyLayout

    def items(self, errors: ErrorLog) -> Iterator[OperationIn | None]:
        """Each operation in turn, its shape checked: None after recording its errors in `errors`."""
        yield from _shaped_items(self.text, self.layout, errors)


def load_job(body: bytes, limits: Limits) -> JobBody:
    """The body with its top-level fields checked; InputRejected unless it is a well-formed body within the limits.

    When a top-level field is wrong, the operations' shapes are checked too, so that every shape
    error is reported at once.
    """
    if len(body) > limits.max_json_bytes:
        reject(
            f"the JSON body is {len(body):,} bytes, more than the limit of {size_text(limits.max_json_bytes)}; "
            "split it into several jobs or upload a CSV",
            413,
        )
    text = _decode(body)
    layout = scan_body(text, limits.max_rows)
    if layout.not_an_object is not None:
        data = layout.not_an_object[0]
    else:  # the operations are read one at a time, later
        data = {**layout.fields, **({"operations": []} if layout.operations_at is not None else {})}
    try:
        head = JobIn.model_validate(data)
    except ValidationError as exc:
        errors = ErrorLog()
        _pydantic_errors(exc, errors)
        for _ in _shaped_items(text, layout, errors):
            pass
        raise InputRejected(errors.kept, errors.total, 422) from None
    return JobBody(head, layout.operations, text, layout)


def _shaped_items(text: str, layout: BodyLayout, errors: ErrorLog) -> Iterator[OperationIn | None]:
    for index, item in enumerate(operation_items(text, layout)):
        try:
            yield OperationIn.model_validate(item)
        except ValidationError as exc:
            _pydantic_errors(exc, errors, ("operations", index))
            yield None


def _decode(body: bytes) -> str:
    """The body's text."""
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reject(f"the body is not UTF-8 text: byte 0x{body[exc.start]:02X} at byte offset {exc.start:,}")


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
        return clip(value)
    if isinstance(value, list):
        return f"[… {len(value)} items]"
    if isinstance(value, dict):
        return "{…}"
    if value is None:
        return None
    return clip(json.dumps(value))


def _pydantic_errors(exc: ValidationError, errors: ErrorLog, prefix: Path = ()) -> None:
    """Translate pydantic's errors (of the value at `prefix`) into FieldErrors with JSON paths."""
    for err in exc.errors(include_url=False):
        loc: Path = (*prefix, *err["loc"])
        path = json_path(loc)
        value = None if err["type"] == "missing" else err.get("input")
        errors.add(
            _pydantic_message(err["type"], loc, path or "the body", value, err["msg"]),
            row_of(loc),
            path or None,
            _json_value(value),
        )


def _pydantic_message(kind: str, loc: tuple[int | str, ...], where: str, value: object, default: str) -> str:
    """Our message for one pydantic error of type `kind` at `loc`."""
    if kind == "missing":
        return f'{where}: required field "{loc[-1]}" is missing'
    if kind == "extra_forbidden":
        parent = tuple("#" if isinstance(p, int) else p for p in loc[:-1])
        model = _MODELS_BY_DEPTH.get(parent)
        allowed = ""
        if model is not None:
            names = [f.alias or n for n, f in model.model_fields.items()]
            allowed = f"; allowed here: {', '.join(names)}"
        return f'{where}: unknown field "{loc[-1]}"{allowed}'
    if kind == "string_type":
        return f"{where} must be a string, not {_json_type(value)}"
    if kind == "list_type":
        return f"{where} must be an array, not {_json_type(value)}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{where} must be an object, not {_json_type(value)}"
    return f"{where}: {default}"
