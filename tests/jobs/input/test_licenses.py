"""The one license resolver: the same names give the same licenses or the same errors from CSV and JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobs.input import Limits, parse_csv, parse_json
from jobs.input.licenses import AddName, Name, resolve_licenses
from jobs.input.rules import CSV_WORDING
from jobs.models import FieldError, InputRejected, LicenseAdd, Operation
from jobs.skus import SkuCatalog

CORPUS = Path(__file__).resolve().parents[2] / "corpus"

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
TEAMS1 = "57ff2da0-773e-42df-b2af-ffb7a2317929"
BI_AZURE_P2 = "70d33638-9c74-4d01-bfd3-562de28bd4ba"

# How each format names its parts in messages, written out here rather than taken from the code.
WORDS = {
    "csv": {"add": "add", "remove": "remove", "disabled_plans": "disabled_plans", "unit": "row", "container": "column"},
    "json": {
        "add": "addLicenses",
        "remove": "removeLicenses",
        "disabled_plans": "disabledPlans",
        "unit": "operation",
        "container": "list",
    },
}


@pytest.fixture(scope="module")
def catalog() -> SkuCatalog:
    """The corpus tenant's catalog."""
    items = json.loads((CORPUS / "subscribed_skus.json").read_text(encoding="utf-8"))["value"]
    return SkuCatalog.from_graph(items)


@dataclass(frozen=True)
class Names:
    """One user's license names, as either format can write them."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    plans: tuple[str, ...] = ()  # CSV: disabled_plans; JSON: disabledPlans of the first license added


def as_csv(names: Names) -> bytes:
    cells = (";".join(names.add), ";".join(names.remove), ";".join(names.plans))
    return f"user,add,remove,disabled_plans\r\nada@contoso.com,{','.join(cells)}\r\n".encode()


def as_json(names: Names) -> bytes:
    op: dict[str, Any] = {"user": "ada@contoso.com"}
    if names.add:
        op["addLicenses"] = [{"sku": name} for name in names.add]
        if names.plans:
            op["addLicenses"][0]["disabledPlans"] = list(names.plans)
    if names.remove:
        op["removeLicenses"] = list(names.remove)
    return json.dumps({"tenant": "sim", "operations": [op]}).encode()


def column(fmt: str, field: str, index: int) -> str:
    """Where the `index`th name of `field` ("add", "remove" or "plans") is, in format `fmt`."""
    if fmt == "csv":
        return {"add": "add", "remove": "remove", "plans": "disabled_plans"}[field]
    return {
        "add": f"operations[0].addLicenses[{index}].sku",
        "remove": f"operations[0].removeLicenses[{index}]",
        "plans": f"operations[0].addLicenses[0].disabledPlans[{index}]",
    }[field]


def run(fmt: str, catalog: SkuCatalog, names: Names) -> tuple[list[Operation], list[FieldError]]:
    """The operations and errors of `names` submitted in format `fmt`."""
    if fmt == "csv":
        parse = parse_csv([as_csv(names)], catalog, Limits())
        ops = list(parse)
        return ops, parse.errors
    try:
        return parse_json(as_json(names), {"sim": catalog}.__getitem__, Limits())[1], []
    except InputRejected as exc:
        return [], exc.errors


VALID = [
    pytest.param(
        Names(add=("ENTERPRISEPACK",), remove=("EMS",), plans=("SWAY", TEAMS1)),
        (LicenseAdd(E3, (SWAY, TEAMS1)),),
        (EMS,),
        id="names-and-ids",
    ),
    pytest.param(
        Names(add=(E5.upper(), " power_bi_pro "), remove=("ems",), plans=(" sway",)),
        (LicenseAdd(E5, (SWAY,)), LicenseAdd("f8a1db68-be16-40ed-86d5-cb42ce701560")),
        (EMS,),
        id="case-and-spaces",
    ),
]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize(("names", "add", "remove"), VALID)
def test_the_same_names_resolve_the_same(
    fmt: str, catalog: SkuCatalog, names: Names, add: tuple[LicenseAdd, ...], remove: tuple[str, ...]
) -> None:
    ops, errors = run(fmt, catalog, names)
    assert errors == []
    assert [(op.add, op.remove) for op in ops] == [(add, remove)]


Expected = tuple[str, int, str, str]  # field ("add", "remove" or "plans"), index in it, value, message


def twice(field: str, index: int, value: str, shown: str) -> Expected:
    """A license (or plan) listed twice: the error on its second mention."""
    what, words = {"add": ("license", "{add}"), "remove": ("license", "{remove}")}.get(
        field, ("service plan", "{disabled_plans}")
    )
    return (field, index, value, f"{what} {shown} is listed twice in {words}; list it once")


def unknown(value: str, suggestion: str) -> Expected:
    """An unknown license to add, with the name suggested."""
    message = f'unknown license "{value}": no subscribed SKU has this skuPartNumber; did you mean {suggestion}?'
    return ("add", 0, value, message)


BOTH = ("remove", 0, "EMS", "license EMS is both added and removed in this {unit}; keep it in one {container} only")
NOT_IN_EMS = "plan SWAY is not in any added SKU (EMS); disable it only in a row that adds a SKU containing it"
UNKNOWN_PLAN = 'unknown service plan "TEAMS": no subscribed SKU has a plan by this name; did you mean TEAMS1?'
COMPANY = 'license "WINDOWS_STORE" applies to the company and cannot be assigned to users'
REFUSED = [
    pytest.param(Names(add=("EMS", "ems")), [twice("add", 1, "ems", "EMS")], id="add-twice"),
    pytest.param(Names(add=("EMS", EMS)), [twice("add", 1, EMS, "EMS")], id="add-twice-by-id"),
    pytest.param(
        Names(add=("ENTERPRISEPACK", "enterprisepack"), plans=("SWAY",)),
        [twice("add", 1, "enterprisepack", "ENTERPRISEPACK")],
        id="add-twice-with-plans",
    ),
    pytest.param(Names(remove=("EMS", EMS)), [twice("remove", 1, EMS, "EMS")], id="remove-twice"),
    pytest.param(
        Names(add=("ENTERPRISEPACK",), plans=("SWAY", SWAY)), [twice("plans", 1, SWAY, "SWAY")], id="plan-twice"
    ),
    pytest.param(Names(add=("EMS",), remove=("EMS",)), [BOTH], id="added-and-removed"),
    pytest.param(
        Names(add=("EMS", "EMS"), remove=("EMS",)), [twice("add", 1, "EMS", "EMS"), BOTH], id="added-twice-and-removed"
    ),
    pytest.param(
        Names(add=("EMS",), remove=("EMS", "EMS")),
        [BOTH, twice("remove", 1, "EMS", "EMS")],
        id="removed-twice-and-added",
    ),
    pytest.param(Names(add=("EMS",), plans=("SWAY",)), [("plans", 0, "SWAY", NOT_IN_EMS)], id="plan-not-in-license"),
    pytest.param(
        Names(add=("ENTERPRISEPACK",), plans=("TEAMS",)), [("plans", 0, "TEAMS", UNKNOWN_PLAN)], id="bad-plan"
    ),
    pytest.param(Names(add=("SPE-E5",)), [unknown("SPE-E5", "SPE_E5")], id="unknown-license"),
    pytest.param(
        Names(add=("ENTERPRISEPAK",), plans=("SWAY",)),
        [unknown("ENTERPRISEPAK", "ENTERPRISEPACK")],
        id="plans-of-an-unknown-license-are-not-checked",
    ),
    pytest.param(Names(remove=("windows_store",)), [("remove", 0, "windows_store", COMPANY)], id="company-license"),
]


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.parametrize(("names", "expected"), REFUSED)
def test_the_same_names_are_refused_the_same(
    fmt: str, catalog: SkuCatalog, names: Names, expected: list[Expected]
) -> None:
    ops, errors = run(fmt, catalog, names)
    row = 2 if fmt == "csv" else 1
    assert ops == []
    assert errors == [
        FieldError(message.format(**WORDS[fmt]), row, column(fmt, field, index), value)
        for field, index, value, message in expected
    ]


def test_plans_for_all_are_disabled_in_every_added_license_holding_them(catalog: SkuCatalog) -> None:
    licenses = resolve_licenses(
        catalog,
        CSV_WORDING,
        [AddName(Name(n, "add")) for n in ("ENTERPRISEPACK", "EMS", "SPE_E5")],
        [],
        [Name("sway", "disabled_plans"), Name(BI_AZURE_P2.upper(), "disabled_plans")],
    )
    assert licenses.errors == ()
    assert licenses.add == (LicenseAdd(E3, (SWAY,)), LicenseAdd(EMS), LicenseAdd(E5, (SWAY, BI_AZURE_P2)))


def test_plans_for_all_need_licenses_to_add(catalog: SkuCatalog) -> None:
    licenses = resolve_licenses(
        catalog, CSV_WORDING, [], [Name("EMS", "remove")], [Name(" SWAY", "disabled_plans"), Name("TEAMS1", "x")]
    )
    assert licenses.remove == (EMS,)
    assert licenses.errors == (
        FieldError(
            "disabled_plans needs licenses in add: plans can only be disabled in SKUs this row adds",
            None,
            "disabled_plans",
            "SWAY;TEAMS1",
        ),
    )


def test_an_add_cell_of_separators_adds_nothing_to_disable_plans_in(catalog: SkuCatalog) -> None:
    parse = parse_csv([b"user,add,disabled_plans\nada@contoso.com, ; |,SWAY\n"], catalog, Limits())
    assert list(parse) == []
    assert [(e.row, e.column, e.message.split(":")[0]) for e in parse.errors] == [
        (2, "disabled_plans", "disabled_plans needs licenses in add"),
        (2, None, "row changes nothing"),
    ]


def test_errors_carry_the_trimmed_name_and_no_row(catalog: SkuCatalog) -> None:
    licenses = resolve_licenses(catalog, CSV_WORDING, [AddName(Name("  EMX\t", "add"))], [])
    assert [(e.row, e.column, e.value) for e in licenses.errors] == [(None, "add", "EMX")]
