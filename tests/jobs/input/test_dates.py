"""Effective dates in CSV and JSON input: the columns and their aliases, the fields, and each refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.input import Limits, parse_csv, parse_json
from jobs.input.dates import date_problem, parse_when
from jobs.models import FieldError, InputRejected, Operation
from jobs.skus import SkuCatalog

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"


@pytest.fixture(scope="module")
def catalog() -> SkuCatalog:
    """The corpus tenant's catalog."""
    manifest = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))
    items = json.loads((CORPUS / manifest["subscribed_skus"]).read_text(encoding="utf-8"))["value"]
    return SkuCatalog.from_graph(items)


def read_csv(catalog: SkuCatalog, text: str) -> tuple[list[Operation], list[FieldError], dict[str, str]]:
    parse = parse_csv([text.encode()], catalog, Limits())
    ops = list(parse)
    return ops, parse.errors, {c["column"]: c["read_as"] for c in parse.reading.to_json()["columns"]}


@pytest.mark.parametrize("header", ["effective_date", "Start Date", "employeeHireDate"])
def test_the_effective_date_column_and_its_aliases(catalog: SkuCatalog, header: str) -> None:
    ops, errors, columns = read_csv(catalog, f"user,add,{header}\n"
                                             "ada@contoso.example,ENTERPRISEPACK,2026-03-02\n"
                                             "bob@contoso.example,ENTERPRISEPACK,\n"
                                             "cy@contoso.example,ENTERPRISEPACK,2026-03-02T09:00:00Z\n")
    assert errors == []
    assert [(op.effective, op.last_day) for op in ops] == [("2026-03-02", False), (None, False),
                                                           ("2026-03-02T09:00:00Z", False)]
    assert columns[header].startswith("effective date")  # the reading report names the date column


def test_a_leavers_last_day_removes_licenses_at_the_end_of_it(catalog: SkuCatalog) -> None:
    ops, errors, columns = read_csv(catalog, "user,remove,employeeLeaveDateTime\n"
                                             "ada@contoso.example,ENTERPRISEPACK,2026-03-31\n")
    assert errors == []
    assert (ops[0].effective, ops[0].last_day, ops[0].remove) == ("2026-03-31", True, (E3,))
    assert columns["employeeLeaveDateTime"].startswith("last day")


def test_bad_dates_are_refused_with_row_column_and_value(catalog: SkuCatalog) -> None:
    _, errors, _ = read_csv(catalog, "user,add,remove,start_date,end_date\n"
                                     "ada@contoso.example,ENTERPRISEPACK,,03/02/2026,\n"
                                     "bob@contoso.example,ENTERPRISEPACK,,next monday,\n"
                                     "cy@contoso.example,,EMS,2026-03-02,2026-03-05\n"
                                     "dee@contoso.example,ENTERPRISEPACK,,,2026-03-05\n"
                                     "eve@contoso.example,ENTERPRISEPACK,,2026-02-30,\n")
    assert [(e.row, e.column, e.value) for e in errors] == [
        (2, "effective_date", "03/02/2026"), (3, "effective_date", "next monday"), (4, "end_date", "2026-03-05"),
        (5, "end_date", "2026-03-05"), (6, "effective_date", "2026-02-30")]
    assert "ambiguous" in errors[0].message and "not both" in errors[2].message
    assert "may only remove" in errors[3].message


def test_a_long_bad_date_is_clipped_in_the_message_and_the_value(catalog: SkuCatalog) -> None:
    cell = "2026-03-02" + "x" * 900  # under the cell limit, far over what a message shows
    _, errors, _ = read_csv(catalog, f"user,add,effective_date\nada@contoso.example,ENTERPRISEPACK,{cell}\n")
    assert [(e.row, e.column) for e in errors] == [(2, "effective_date")]
    assert errors[0].message.startswith('effective_date "2026-03-02xxx') and "is not a date" in errors[0].message
    assert len(errors[0].message) < 250 and len(errors[0].value or "") <= 101


def test_json_operations_take_an_effective_or_end_date(catalog: SkuCatalog) -> None:
    body = json.dumps({"tenant": "sim", "operations": [
        {"user": "ada@contoso.example", "addLicenses": [{"sku": "ENTERPRISEPACK"}], "effectiveDate": "2026-03-02"},
        {"user": "bob@contoso.example", "addLicenses": [{"sku": "ENTERPRISEPACK"}],
         "employeeHireDate": "2026-03-02T08:00:00Z"},
        {"user": "cy@contoso.example", "removeLicenses": ["ENTERPRISEPACK"], "endDate": "2026-03-31"},
    ]}).encode()
    _, ops, _ = parse_json(body, {"sim": catalog}.__getitem__, Limits())
    assert [(op.effective, op.last_day) for op in ops] == [
        ("2026-03-02", False), ("2026-03-02T08:00:00Z", False), ("2026-03-31", True)]


def test_a_json_bad_date_names_its_field(catalog: SkuCatalog) -> None:
    body = json.dumps({"tenant": "sim", "operations": [
        {"user": "ada@contoso.example", "addLicenses": [{"sku": "ENTERPRISEPACK"}], "effectiveDate": "tomorrow"},
    ]}).encode()
    with pytest.raises(InputRejected) as caught:
        parse_json(body, {"sim": catalog}.__getitem__, Limits())
    errors = caught.value.errors
    assert [(e.row, e.column, e.value) for e in errors] == [(1, "operations[0].effectiveDate", "tomorrow")]


def test_date_syntax() -> None:
    assert parse_when("2026-03-02").isoformat() == "2026-03-02"
    assert parse_when("2026-03-02T09:00:00.5+01:00").isoformat() == "2026-03-02T09:00:00.500000+01:00"
    assert date_problem("2026-03-02 09:00") is None
    for bad in ("2026-3-2", "20260302", "2026-03-02T25:00", "2026-13-01", ""):
        assert date_problem(bad) is not None, bad
