"""The shape of a JSON job body: size, encoding, nesting and field types, before any rule about values."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from jobs.input.errors import ErrorLog
from jobs.input.rules import Limits, clip, size_text
from jobs.models import FieldError, InputRejected

MAX_JSON_DEPTH = 32


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
    dry_run: bool = False
    on_seat_shortage: Literal["fail", "wait"] = "fail"
    callback_url: str | None = None
    mode: Literal["add", "exact", "sync"] | None = None


_MODELS_BY_DEPTH: dict[tuple[str, ...], type[BaseModel]] = {
    (): JobIn,
    ("operations", "#"): OperationIn,
    ("operations", "#", "addLicenses", "#"): AddLicenseIn,
}


def reject(message: str, status_code: int = 422, column: str | None = None, value: str | None = None) -> NoReturn:
    """Refuse the whole body for one reason."""
    raise InputRejected([FieldError(message, None, column, value)], 1, status_code)


def load_job(body: bytes, limits: Limits) -> JobIn:
    """The body as a JobIn; InputRejected unless it is a well-formed job body within the limits."""
    if len(body) > limits.max_json_bytes:
        reject(
            f"the JSON body is {len(body):,} bytes, more than the limit of {size_text(limits.max_json_bytes)}; "
            "split it into several jobs or upload a CSV",
            413,
        )
    data = _decode(body)
    _check_depth(data)
    if isinstance(data, dict) and isinstance(data.get("operations"), list):
        count = len(data["operations"])
        if count > limits.max_rows:
            reject(
                f"operations has {count:,} items, more than the limit of {limits.max_rows:,} per job; split "
                "it into several jobs",
                column="operations",
            )
    try:
        return JobIn.model_validate(data)
    except ValidationError as exc:
        errors = ErrorLog()
        _pydantic_errors(exc, errors)
        raise InputRejected(errors.kept, errors.total, 422) from None


def _decode(body: bytes) -> object:
    """The body's JSON value."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        reject(f"the body is not UTF-8 text: byte 0x{body[exc.start]:02X} at byte offset {exc.start:,}")
    try:
        return json.loads(text)
    except RecursionError:
        reject(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels; a job body needs at most 6")
    except json.JSONDecodeError as exc:
        reject(f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")


def _check_depth(data: object) -> None:
    """Refuse a value nested deeper than MAX_JSON_DEPTH."""
    stack: list[tuple[object, int, tuple[int | str, ...]]] = [(data, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_JSON_DEPTH:
            where = _json_path(path) or "the body"
            message = (
                f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels (at {clip(where)}); a job body needs at most 6"
            )
            raise InputRejected([FieldError(message, _row_of(path), where)])
        if isinstance(node, dict):
            stack.extend((v, depth + 1, (*path, k)) for k, v in node.items() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, (*path, i)) for i, v in enumerate(node) if isinstance(v, dict | list))


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
        return clip(value)
    if isinstance(value, list):
        return f"[… {len(value)} items]"
    if isinstance(value, dict):
        return "{…}"
    if value is None:
        return None
    return clip(json.dumps(value))


def _row_of(loc: Sequence[int | str]) -> int | None:
    """The 1-based operation index a location is inside, if any."""
    if len(loc) >= 2 and loc[0] == "operations" and isinstance(loc[1], int):
        return loc[1] + 1
    return None


def _pydantic_errors(exc: ValidationError, errors: ErrorLog) -> None:
    """Translate pydantic's errors into FieldErrors with JSON paths."""
    for err in exc.errors(include_url=False):
        loc: tuple[int | str, ...] = tuple(err["loc"])
        path = _json_path(loc)
        value = None if err["type"] == "missing" else err.get("input")
        errors.add(
            _pydantic_message(err["type"], loc, path or "the body", value, err["msg"]),
            _row_of(loc),
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
