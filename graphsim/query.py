"""OData query options graphsim understands: a `$filter` subset, `$select` and `$top`/`$skiptoken` paging."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from graphsim.lifecycle import parse_time
from graphsim.wire import encode_skiptoken

SIGN_IN_PREFIX = "signinactivity/"

_DATETIME = r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?"
_FILTER_TERM = re.compile(
    rf"""^\s*(?:
        (?P<prop>[\w/]+)\s+(?P<op>eq|ne|ge|le|gt|lt)\s+
            (?:'(?P<value>(?:[^']|'')*)'|(?P<bare>true|false|null)|(?P<when>{_DATETIME}))
      | (?P<inprop>\w+)\s+in\s+\((?P<list>[^)]*)\)
      | startswith\(\s*(?P<swprop>\w+)\s*,\s*'(?P<prefix>(?:[^']|'')*)'\s*\)
      | assignedLicenses/any\(\s*(?P<var>\w+)\s*:\s*(?P=var)/skuId\s+eq\s+(?P<sku>[0-9a-fA-F-]{{36}})\s*\)
    )\s*$""",
    re.VERBOSE,
)
_NOT = re.compile(r"^\s*not\s*\((?P<inner>.*)\)\s*$", re.IGNORECASE)
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "ge": lambda a, b: a >= b,
    "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "lt": lambda a, b: a < b,
}

Predicate = Callable[[Any], bool]


@dataclass(frozen=True)
class FilterSpec:
    """What one resource type lets `$filter` use, and how to read each property of an object."""

    # Lower-case name -> canonical property name.
    names: Mapping[str, str]
    # Properties `eq`, `in` and `startswith` may name (strings and booleans).
    equality: frozenset[str]
    # DateTimeOffset properties, compared with eq, ne, ge, le, gt and lt.
    dates: frozenset[str]
    value: Callable[[Any, str], Any]
    skus: Callable[[Any], Iterable[str]]
    # The signInActivity field (e.g. lastSignInDateTime) of an object as epoch seconds; None: not filterable.
    sign_in: Callable[[Any, str], float | None] | None = None
    sign_in_fields: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Filter:
    """A compiled `$filter`: the predicate and whether it reads signInActivity."""

    predicate: Predicate
    uses_sign_in: bool


def _date_term(op: str, wanted: float | None, read: Callable[[Any], float | None]) -> Predicate:
    """A DateTimeOffset comparison as OData defines it for null: only `eq null` and `ne <time>` match null."""
    compare = _COMPARE[op]

    def matches(obj: Any) -> bool:
        value = read(obj)
        if value is None or wanted is None:
            return (value is None and wanted is None and op == "eq") or (op == "ne" and value != wanted)
        return compare(value, wanted)

    return matches


def _comparison(m: re.Match[str], spec: FilterSpec) -> tuple[Predicate, bool] | None:
    raw_prop, op = m["prop"], m["op"]
    if raw_prop.lower().startswith(SIGN_IN_PREFIX):
        name = raw_prop.split("/", 1)[1]
        field = next((f for f in spec.sign_in_fields if f.lower() == name.lower()), None)
        reader = spec.sign_in
        if field is None or reader is None or m["value"] is not None or m["bare"] not in (None, "null"):
            return None
        wanted = None if m["when"] is None else parse_time(m["when"])
        return _date_term(op, wanted, lambda obj: reader(obj, field)), True
    prop = spec.names.get(raw_prop.lower())
    if prop in spec.dates:
        if m["value"] is not None or m["bare"] not in (None, "null"):
            return None
        wanted = None if m["when"] is None else parse_time(m["when"])
        return _date_term(op, wanted, lambda obj: spec.value(obj, prop)), False
    if prop not in spec.equality or op != "eq" or m["when"] is not None:
        return None
    target: Any = (m["value"].replace("''", "'").lower() if m["value"] is not None
                   else {"true": True, "false": False, "null": None}[m["bare"]])

    def eq(obj: Any) -> bool:
        value = spec.value(obj, prop)
        return bool((value.lower() if isinstance(value, str) else value) == target)

    return eq, False


def _term(text: str, spec: FilterSpec) -> tuple[Predicate, bool] | None:
    """One `and`-joined term as (predicate, reads signInActivity), or None when unsupported or invalid."""
    try:
        return _parse_term(text, spec)
    except ValueError:  # a date-time that does not exist, such as 2024-02-30
        return None


def _parse_term(text: str, spec: FilterSpec) -> tuple[Predicate, bool] | None:
    negated = _NOT.match(text)
    if negated is not None:
        inner = _term(negated["inner"], spec)
        if inner is None:
            return None
        predicate, sign_in = inner
        return (lambda obj: not predicate(obj)), sign_in
    m = _FILTER_TERM.match(text)
    if m is None:
        return None
    if m["prop"]:
        return _comparison(m, spec)
    if m["inprop"] or m["swprop"]:
        prop = spec.names.get((m["inprop"] or m["swprop"]).lower())
        if prop not in spec.equality:
            return None
        if m["inprop"]:
            values = {v.strip().strip("'").replace("''", "'").lower() for v in m["list"].split(",")}
            return (lambda obj: _lower(spec.value(obj, prop)) in values), False
        prefix = m["prefix"].replace("''", "'").lower()

        def starts(obj: Any) -> bool:
            value = _lower(spec.value(obj, prop))
            return value is not None and value.startswith(prefix)

        return starts, False
    sku = m["sku"].lower()
    return (lambda obj: sku in spec.skus(obj)), False


def _lower(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) else None


def compile_filter(text: str, spec: FilterSpec) -> Filter | None:
    """The `$filter` graphsim supports (terms joined by `and`), or None when unsupported.

    signInActivity terms cannot be combined with any other property (Graph: "but not with any other
    filterable properties"), so such a mix is unsupported too.
    """
    predicates: list[Predicate] = []
    sign_in, other = False, False
    for term in re.split(r"\s+and\s+", text.strip()):
        compiled = _term(term, spec)
        if compiled is None:
            return None
        predicates.append(compiled[0])
        sign_in, other = sign_in or compiled[1], other or not compiled[1]
    if sign_in and other:
        return None
    return Filter(lambda obj: all(p(obj) for p in predicates), sign_in)


def parse_select(raw: list[str] | None, names: Mapping[str, str]) -> tuple[str, ...] | None | str:
    """`$select` as canonical names in order (None when absent), or the first unknown name as a str."""
    if not raw:
        return None
    selected: list[str] = []
    for part in ",".join(raw).split(","):
        part = part.strip()
        if not part:
            continue
        name = names.get(part.lower())
        if name is None:
            return part
        if name not in selected:
            selected.append(name)
    return tuple(selected)


def next_link(base: str, top: int, offset: int, select: tuple[str, ...] | None, filter_text: str | None) -> str:
    """The `@odata.nextLink` of the page after one that ends at `offset`."""
    params = [f"$top={top}"]
    if select:
        params.append(f"$select={','.join(select)}")
    if filter_text is not None:
        params.append(f"$filter={filter_text}")
    params.append(f"$skiptoken={encode_skiptoken(offset)}")
    return f"{base}?{'&'.join(params)}"
