"""A JSON job body read without building it whole: checked in one pass, its operations decoded one at a time.

`json.loads` of a body of empty objects costs about 24 times its size, and every check it precedes
comes too late for memory. So the first pass (`scan_body`) walks the text and checks that it is one
JSON value within the limits — syntax, nesting, the length of each operation and of each other
field, the number of operations — decoding one operation at a time and keeping only the small
top-level fields; the second (`operation_items`) decodes the operations again, one at a time, for
validation. Whatever the body holds, it costs its text and one operation.

Each value is first matched by a pattern that skips strings and balances brackets up to the depth
left (at C speed, never past the length allowed), then decoded by `json` itself, so syntax errors
keep json's wording and positions; the few structural ones found here (between fields and between
operations) use the same wording.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn

from jobs.input.rules import clip
from jobs.models import FieldError, InputRejected

MAX_JSON_DEPTH = 32
MAX_VALUE_CHARS = 64 * 1024  # one operation, or one top-level field other than `operations`
DEPTH_HINT = "a job body needs at most 6"

Path = tuple[int | str, ...]

_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_SCALAR = re.compile(r'[^ \t\n\r,:\[\]{}"]+')  # a number or a literal (json decides which, if any)
_DECODER = json.JSONDecoder()
_KINDS = {"[": "an array", '"': "a string", "t": "a boolean", "f": "a boolean", "n": "null"}


@functools.cache
def _container(levels: int) -> re.Pattern[str]:
    """An array or object nested at most `levels` deep (itself included), its strings skipped."""
    inner = rf'(?:[^\[\]{{}}"]++|{_STRING.pattern})*+'
    for _ in range(levels - 1):
        inner = rf'(?:[^\[\]{{}}"]++|{_STRING.pattern}|[\[{{]{inner}[\]}}])*+'
    return re.compile(rf"[\[{{]{inner}[\]}}]", re.DOTALL)


@dataclass(frozen=True)
class BodyLayout:
    """What the first pass found: the body if it is no object, else its fields and where its operations are."""

    fields: dict[str, object] = field(default_factory=dict)  # decoded; `operations` only when it is no array
    operations_at: int | None = None  # just after the `[` of an `operations` array
    operations: int = 0  # how many items that array has
    not_an_object: tuple[object] | None = None  # the body, decoded, when it is not a JSON object


def reject(message: str, status_code: int = 422, column: str | None = None, value: str | None = None,
           row: int | None = None) -> NoReturn:
    """Refuse the whole body for one reason."""
    raise InputRejected([FieldError(message, row, column, value)], 1, status_code)


def json_path(loc: Path) -> str:
    """`operations[3].addLicenses[0].sku` from a location."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def row_of(loc: Path) -> int | None:
    """The 1-based operation index a location is inside, if any."""
    if len(loc) >= 2 and loc[0] == "operations" and isinstance(loc[1], int):
        return loc[1] + 1
    return None


def check_depth(data: object, depth: int = 1, path: Path = ()) -> None:
    """Refuse a value nested deeper than MAX_JSON_DEPTH; `data` sits at `depth`, at `path`."""
    stack: list[tuple[object, int, Path]] = [(data, depth, path)]
    while stack:
        node, level, where = stack.pop()
        if level > MAX_JSON_DEPTH:
            shown = json_path(where) or "the body"
            reject(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels (at {clip(shown)}); {DEPTH_HINT}",
                   column=shown, row=row_of(where))
        if isinstance(node, dict):
            stack.extend((v, level + 1, (*where, k)) for k, v in node.items() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, level + 1, (*where, i)) for i, v in enumerate(node) if isinstance(v, dict | list))


def scan_body(text: str, max_rows: int) -> BodyLayout:
    """Check the whole body within the limits, keeping its small fields; InputRejected at the first problem."""
    pos = _skip(text, 0)
    if text[pos:pos + 1] != "{":
        value, end = _value(text, pos, 1, ())
        _end_of_body(text, end)
        return BodyLayout(not_an_object=(value,))
    fields: dict[str, object] = {}
    operations_at, count = None, 0
    pos = _skip(text, pos + 1)
    if text[pos:pos + 1] != "}":
        while True:
            if text[pos:pos + 1] != '"':
                _syntax(text, pos, "Expecting property name enclosed in double quotes")
            key, pos = _key(text, pos)
            pos = _skip(text, pos)
            if text[pos:pos + 1] != ":":
                _syntax(text, pos, "Expecting ':' delimiter")
            pos = _skip(text, pos + 1)
            fields.pop(key, None)  # as in json, a repeated name keeps its last value
            if key == "operations" and text[pos:pos + 1] == "[":
                operations_at = pos + 1
                count, pos = _count_operations(text, pos + 1, max_rows)
            else:
                operations_at = None if key == "operations" else operations_at
                fields[key], pos = _value(text, pos, 2, (key,))
            pos = _skip(text, pos)
            if text[pos:pos + 1] == "}":
                break
            if text[pos:pos + 1] != ",":
                _syntax(text, pos, "Expecting ',' delimiter")
            pos = _skip(text, pos + 1)
    _end_of_body(text, pos + 1)
    if count > max_rows:
        reject(f"operations has {count:,} items, more than the limit of {max_rows:,} per job; split it into "
               "several jobs", column="operations")
    return BodyLayout(fields, operations_at, count if operations_at is not None else 0)


def operation_items(text: str, layout: BodyLayout) -> Iterator[object]:
    """The operations of a body `scan_body` accepted, decoded one at a time."""
    pos = layout.operations_at
    if pos is None:
        return
    for _ in range(layout.operations):
        item, pos = _DECODER.raw_decode(text, _skip(text, pos))
        yield item
        pos = _skip(text, pos) + 1  # past the `,` or the closing `]`


def _count_operations(text: str, pos: int, max_rows: int) -> tuple[int, int]:
    """How many items the operations array starting at `pos` has, and where it ends; each one checked.

    Items past `max_rows` are only measured, not decoded: the body is refused for their number anyway.
    """
    pos = _skip(text, pos)
    if text[pos:pos + 1] == "]":
        return 0, pos + 1
    count = 0
    while True:
        _, pos = _value(text, pos, 3, ("operations", count), decode=count < max_rows)
        count += 1
        pos = _skip(text, pos)
        if text[pos:pos + 1] == "]":
            return count, pos + 1
        if text[pos:pos + 1] != ",":
            _syntax(text, pos, "Expecting ',' delimiter")
        pos = _skip(text, pos + 1)


def _key(text: str, pos: int) -> tuple[str, int]:
    """A field name and where it ends."""
    if _STRING.match(text, pos, pos + MAX_VALUE_CHARS) is None:
        _fallback(text, pos, 2, ("a field name",))
    try:
        key, end = _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        _syntax(text, exc.pos, exc.msg)
    return str(key), end


def _value(text: str, pos: int, depth: int, path: Path, *, decode: bool = True) -> tuple[object, int]:
    """The value at `pos` (None unless `decode`) and where it ends; refused when malformed, too deep or too long."""
    first = text[pos:pos + 1]
    if first in ("[", "{"):
        match = _container(MAX_JSON_DEPTH - depth + 1).match(text, pos, pos + MAX_VALUE_CHARS)
    elif first == '"':
        match = _STRING.match(text, pos, pos + MAX_VALUE_CHARS)
    else:
        match = _SCALAR.match(text, pos)
        if match is not None and match.end() - pos > MAX_VALUE_CHARS:
            _too_long(path, first)
    if match is None:
        return _fallback(text, pos, depth, path)
    if not decode:
        return None, match.end()
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        _syntax(text, exc.pos, exc.msg)
    except ValueError:  # an integer of more digits than Python converts
        _syntax(text, pos, "Number too long to convert")


def _fallback(text: str, pos: int, depth: int, path: Path) -> tuple[object, int]:
    """Say why the value at `pos` did not match: json's syntax error, its depth, or its length.

    Decodes at most MAX_VALUE_CHARS of it: an error json finds only where that piece was cut
    means the value is longer than that.
    """
    piece = text[pos:pos + MAX_VALUE_CHARS]
    cut = pos + MAX_VALUE_CHARS < len(text)
    try:
        value, end = _DECODER.raw_decode(piece)
    except RecursionError:
        reject(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels; {DEPTH_HINT}")
    except json.JSONDecodeError as exc:
        if cut and (exc.pos >= len(piece) or exc.msg.startswith("Unterminated string")):
            _too_long(path, text[pos:pos + 1])
        _syntax(text, pos + exc.pos, exc.msg)
    except ValueError:
        _syntax(text, pos, "Number too long to convert")
    check_depth(value, depth, path)
    return value, pos + end  # not reached: the pattern refuses only what json refuses or is too deep


def _too_long(path: Path, first: str) -> NoReturn:
    if not path:
        reject(f"the body must be an object, not {_KINDS.get(first, 'a number')}")
    where = json_path(path)
    what = "one operation" if row_of(path) is not None else 'a field other than "operations"'
    reject(f"{clip(where)} is longer than {MAX_VALUE_CHARS:,} characters, the limit for {what}",
           column=where, row=row_of(path))


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _end_of_body(text: str, end: int) -> None:
    end = _skip(text, end)
    if end != len(text):
        _syntax(text, end, "Extra data")


def _syntax(text: str, pos: int, message: str) -> NoReturn:
    """Refuse malformed JSON as json words it: the message and where (line and column, 1-based)."""
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    reject(f"the body is not valid JSON: {message} at line {line}, column {column}")
