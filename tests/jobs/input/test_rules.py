"""The value rules CSV and JSON share: users, usage locations and cells are refused the same way in both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.input import Limits, parse_csv, parse_json
from jobs.models import FieldError, InputRejected, Operation
from jobs.skus import SkuCatalog

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"


@pytest.fixture(scope="module")
def catalog() -> SkuCatalog:
    """The corpus tenant's catalog."""
    items = json.loads((CORPUS / "subscribed_skus.json").read_text(encoding="utf-8"))["value"]
    return SkuCatalog.from_graph(items)


def run(fmt: str, catalog: SkuCatalog, users: list[dict[str, str]]) -> tuple[list[Operation], list[FieldError]]:
    """Operations and errors for `users`, each a dict of user, remove and usage_location, in format `fmt`."""
    if fmt == "csv":
        lines = ["user,remove,usage_location"]
        lines += [f"{u['user']},{u.get('remove', '')},{u.get('usage_location', '')}" for u in users]
        parse = parse_csv([("\n".join(lines) + "\n").encode()], catalog, Limits())
        ops = list(parse)
        return ops, parse.errors
    operations: list[dict[str, Any]] = []
    for u in users:
        op: dict[str, Any] = {"user": u["user"]}
        if u.get("remove"):
            op["removeLicenses"] = [u["remove"]]
        if u.get("usage_location"):
            op["usageLocation"] = u["usage_location"]
        operations.append(op)
    body = json.dumps({"tenant": "sim", "operations": operations}).encode()
    try:
        return parse_json(body, {"sim": catalog}.__getitem__, Limits())[1], []
    except InputRejected as exc:
        return [], exc.errors


def where(fmt: str, index: int, field: str) -> tuple[int, str]:
    """(row, column) of `field` of the `index`th user (0-based) in format `fmt`."""
    if fmt == "csv":
        return index + 2, field
    json_field = {"user": "user", "remove": "removeLicenses[0]", "usage_location": "usageLocation"}[field]
    return index + 1, f"operations[{index}].{json_field}"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_usage_location_is_trimmed_and_upper_cased(fmt: str, catalog: SkuCatalog) -> None:
    ops, errors = run(fmt, catalog, [{"user": "ada@contoso.com", "usage_location": " gb "}])
    assert errors == []
    assert [op.usage_location for op in ops] == ["GB"]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize(
    ("written", "value", "problem"),
    [
        ("UK", "UK", "is not an ISO 3166-1 alpha-2 country code; did you mean GB?"),
        (" xk", "xk", "is not an assigned ISO 3166-1 alpha-2 country code; use the user's two-letter country code"),
        ("U.S.", "U.S.", "is not an ISO 3166-1 alpha-2 country code; use two letters such as US, GB or DE"),
    ],
)
def test_usage_location_is_refused_the_same(
    fmt: str, catalog: SkuCatalog, written: str, value: str, problem: str
) -> None:
    ops, errors = run(fmt, catalog, [{"user": "ada@contoso.com", "usage_location": written}])
    field = "usage_location" if fmt == "csv" else "usageLocation"
    assert ops == []
    assert [(e.row, e.column, e.value) for e in errors] == [(*where(fmt, 0, "usage_location"), value)]
    assert errors[0].message.startswith(f'{field} "{value}" {problem}')


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ("1234-abcd", "is neither a userPrincipalName (name@domain) nor a valid object id"),
        ("ada@contoso", 'is not a valid userPrincipalName: "contoso" is not a domain name'),
        ("ada lovelace@contoso.com", "contains a space; a userPrincipalName has none"),
    ],
)
def test_invalid_users_are_refused_the_same(fmt: str, catalog: SkuCatalog, user: str, problem: str) -> None:
    ops, errors = run(fmt, catalog, [{"user": user, "remove": "EMS"}])
    assert ops == []
    assert [(e.row, e.column, e.value) for e in errors] == [(*where(fmt, 0, "user"), user)]
    assert errors[0].message.startswith(f'user "{user}" {problem}')


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_repeated_user_names_where_it_was_first(fmt: str, catalog: SkuCatalog) -> None:
    users = [{"user": "ada@contoso.com", "remove": "EMS"}, {"user": "bob@contoso.com", "remove": "EMS"}]
    ops, errors = run(fmt, catalog, [*users, {"user": "ADA@Contoso.com", "usage_location": "FR"}])
    first, unit = ("row 2", "row") if fmt == "csv" else ("operations[0]", "operation")
    assert errors == [
        FieldError(
            f'user "ADA@Contoso.com" appears more than once: first in {first}; give each user one {unit} '
            f"(one {unit} can both add and remove licenses)",
            *where(fmt, 2, "user"),
            "ADA@Contoso.com",
        )
    ]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("=EMS", 'looks like a spreadsheet formula (starts with "="), which spreadsheet apps would run'),
        ("EMS\x1b[0m", "contains a control character (U+001B); remove it"),
    ],
)
def test_unsafe_license_names_are_refused_the_same(fmt: str, catalog: SkuCatalog, written: str, problem: str) -> None:
    ops, errors = run(fmt, catalog, [{"user": "ada@contoso.com", "remove": written}])
    row, column = where(fmt, 0, "remove")
    assert ops == []
    assert [(e.row, e.column, e.value) for e in errors] == [(row, column, written)]
    assert errors[0].message.startswith(f"{column} {problem}")


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_names_are_resolved_whatever_their_spacing(fmt: str, catalog: SkuCatalog) -> None:
    ops, errors = run(fmt, catalog, [{"user": " ada@contoso.com ", "remove": "\u00a0ems "}])
    assert errors == []
    assert [(op.user, op.remove) for op in ops] == [("ada@contoso.com", (EMS,))]
