"""The CSVs admins already have: preamble lines, bracketed headers, aliases, an Action column, exports of what
users hold (and the mode they need), license names as admins write them, kept-column limits, UTF-16, and the
reading report that says how each column was read."""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

import pytest

from jobs.input import CsvParse, Limits, parse_csv, parse_json
from jobs.models import FieldError, InputRejected, JobOptions, LicenseAdd, LicenseMode, Operation
from jobs.skus import SkuCatalog

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"
PBI = "f8a1db68-be16-40ed-86d5-cb42ce701560"
E1 = "18181a46-0d4e-45cd-891e-60aabd171b4e"
EXACT = JobOptions(mode=LicenseMode.EXACT)
ADD = JobOptions(mode=LicenseMode.ADD)


@pytest.fixture(scope="module")
def catalog() -> SkuCatalog:
    items = json.loads((CORPUS / "subscribed_skus.json").read_text(encoding="utf-8"))["value"]
    return SkuCatalog.from_graph(items)


def parse(catalog: SkuCatalog, data: str | bytes, options: JobOptions = JobOptions(), limits: Limits = Limits(),
          chunk: int = 0) -> tuple[CsvParse, list[Operation]]:
    raw = data.encode() if isinstance(data, str) else data
    chunks = [raw[i : i + chunk] for i in range(0, len(raw), chunk)] if chunk else [raw]
    csv = parse_csv(chunks, catalog, limits, options)
    return csv, list(csv)


def ops_of(catalog: SkuCatalog, data: str | bytes, options: JobOptions = JobOptions(),
           **kwargs: Any) -> list[Operation]:
    csv, ops = parse(catalog, data, options, **kwargs)
    assert csv.errors == [], csv.errors
    return ops


def errors_of(catalog: SkuCatalog, data: str | bytes, options: JobOptions = JobOptions(),
              limits: Limits = Limits()) -> list[FieldError]:
    csv, _ = parse(catalog, data, options, limits)
    assert csv.errors, "expected errors"
    return csv.errors


def columns(csv: CsvParse) -> list[str]:
    return csv.reading.lines()[: len(csv.reading.columns)]


# --- lines above the header -------------------------------------------------------------------------------

def test_windows_powershell_type_line_is_skipped_and_noted(catalog: SkuCatalog) -> None:
    data = ('#TYPE System.Management.Automation.PSCustomObject\r\n"UserPrincipalName","SkuPartNumber"\r\n'
            '"ada@contoso.com","ENTERPRISEPACK"\r\n')
    csv, ops = parse(catalog, data)
    assert [(o.row, o.user, o.add) for o in ops] == [(3, "ada@contoso.com", (LicenseAdd(E3),))]
    assert csv.reading.layout == "powershell_export"
    assert csv.reading.notes == ["line 1: #TYPE line skipped (Windows PowerShell Export-Csv type information)"]
    assert columns(csv) == ["UserPrincipalName → user", "SkuPartNumber → add"]


@pytest.mark.parametrize("version", ["version:v1.0", "version:v1.0,,,", '"version:v1.0";;', "Version:V1.0\t"])
def test_entra_template_version_line_and_bracketed_headers(catalog: SkuCatalog, version: str) -> None:
    data = (f"{version}\nName [displayName] Required,User name [userPrincipalName] Required,"
            "Usage location [usageLocation],Department [department]\n"
            "Ada Lovelace,ada@contoso.com,gb,Research\n")
    csv, ops = parse(catalog, data)
    assert [(o.row, o.user, o.usage_location, o.extra) for o in ops] == [
        (3, "ada@contoso.com", "GB", (("Name [displayName] Required", "Ada Lovelace"),
                                      ("Department [department]", "Research")))]
    assert csv.reading.layout == "entra_bulk_template"
    # The line is named as written.
    assert [n.lower() for n in csv.reading.notes] == ["line 1: version:v1.0 line skipped (entra admin center bulk "
                                                      "template)"]
    assert columns(csv) == ["Name [displayName] Required → kept",
                            "User name [userPrincipalName] Required → user (by its [property])",
                            "Usage location [usageLocation] → usage_location (by its [property])",
                            "Department [department] → kept"]


def test_the_templates_example_row_is_skipped_and_noted(catalog: SkuCatalog) -> None:
    data = ("version:v1.0\nUser name [userPrincipalName] Required,Usage location [usageLocation]\n"
            "Example:,US\nada@contoso.com,US\n")
    csv, ops = parse(catalog, data)
    assert [o.row for o in ops] == [4]
    assert csv.reading.notes[-1] == "row 3: Microsoft's example row (Example:) skipped"


def test_a_type_line_is_skipped_only_at_the_top(catalog: SkuCatalog) -> None:
    error = errors_of(catalog, "user,add\n#TYPE x,EMS\n")[0]
    assert (error.row, error.column) == (2, "user")


# --- header names ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["AccountSkuId", "SkuPartNumber", "SkuId", "Licenses", "License", "sku_part_number"])
def test_license_column_aliases(catalog: SkuCatalog, name: str) -> None:
    csv, ops = parse(catalog, f"UserPrincipalName,{name}\nada@contoso.com,ENTERPRISEPACK\n")
    assert ops[0].add == (LicenseAdd(E3),)
    assert columns(csv) == ["UserPrincipalName → user", f"{name} → add"]


def test_the_learn_powershell_example_reads_accountskuid_and_the_tenant_prefix(catalog: SkuCatalog) -> None:
    # The worst row: this file once set the usage location and silently dropped AccountSkuId.
    data = ("UserPrincipalName,FirstName,LastName,DisplayName,UsageLocation,AccountSkuId\n"
            "ClaudeL@contoso.onmicrosoft.com,Claude,Loiselle,Claude Loiselle,US,contoso:ENTERPRISEPACK\n")
    csv, ops = parse(catalog, data)
    assert (ops[0].add, ops[0].usage_location) == ((LicenseAdd(E3),), "US")
    assert columns(csv) == ["UserPrincipalName → user", "FirstName → kept", "LastName → kept", "DisplayName → kept",
                            "UsageLocation → usage_location", "AccountSkuId → add"]


def test_a_prefix_for_another_account_names_the_mismatch(catalog: SkuCatalog) -> None:
    error = errors_of(catalog, "UserPrincipalName,AccountSkuId\nada@contoso.com,fabrikam:ENTERPRISEPACK\n")[0]
    assert (error.row, error.column, error.value) == (2, "add", "fabrikam:ENTERPRISEPACK")
    assert "belongs to the account \"fabrikam\", but this tenant's account is \"Contoso\"" in error.message


def test_ragged_short_rows_are_padded(catalog: SkuCatalog) -> None:
    ops = ops_of(catalog, "UserPrincipalName,AccountSkuId,UsageLocation,Department\nada@contoso.com,EMS\n")
    assert (ops[0].add, ops[0].usage_location, ops[0].extra) == ((LicenseAdd(EMS),), None, ())


# --- an Action column -------------------------------------------------------------------------------------------

def test_action_says_which_side_each_rows_licenses_go(catalog: SkuCatalog) -> None:
    data = ("UserPrincipalName,SkuPartNumber,Action\n"
            "ada@contoso.com,SPE_E5,Add\nada@contoso.com,ENTERPRISEPACK,remove\n"
            "bob@contoso.com,EMS,ASSIGN\ncy@contoso.com,EMS,Unassign\ndee@contoso.com,POWER_BI_PRO,RemoveLicense\n")
    csv, ops = parse(catalog, data)
    assert [(o.row, o.user, o.add, o.remove) for o in ops] == [
        (2, "ada@contoso.com", (LicenseAdd(E5),), (E3,)),  # adjacent rows of one user: one operation
        (4, "bob@contoso.com", (LicenseAdd(EMS),), ()),
        (5, "cy@contoso.com", (), (EMS,)),
        (6, "dee@contoso.com", (), (PBI,)),
    ]
    assert ops[0].source == (("add", "SPE_E5"), ("remove", "ENTERPRISEPACK"))
    assert columns(csv) == ["UserPrincipalName → user", "SkuPartNumber → add or remove, by the Action column",
                            "Action → action (Add or Remove)"]


@pytest.mark.parametrize(("cell", "message"), [
    ("", "action is empty: write Add (or Assign) or Remove (or Unassign, RemoveLicense)"),
    ("Delete", 'action "Delete" is not an action: write Add (or Assign) or Remove (or Unassign, RemoveLicense)'),
])
def test_an_unknown_or_empty_action_is_refused(catalog: SkuCatalog, cell: str, message: str) -> None:
    error = errors_of(catalog, f"user,license,action\nada@contoso.com,EMS,{cell}\n")[0]
    assert error == FieldError(message, 2, "action", cell)


def test_a_users_rows_must_be_adjacent_and_a_license_given_once(catalog: SkuCatalog) -> None:
    errors = errors_of(catalog, "user,sku,action\nada@contoso.com,EMS,Add\nbob@contoso.com,EMS,Add\n"
                                "ada@contoso.com,SPE_E5,Add\n")
    assert errors[0].row == 4 and "put a user's rows next to each other" in errors[0].message
    errors = errors_of(catalog, "user,sku,action\nada@contoso.com,EMS,Add\nada@contoso.com,EMS,Remove\n")
    assert errors == [FieldError('license EMS appears again for user "ada@contoso.com" (first in row 2); give each '
                                 "license of a user once", 3, "add", "EMS")]


def test_action_with_a_remove_column_is_refused(catalog: SkuCatalog) -> None:
    error = errors_of(catalog, "user,add,remove,action\nada@contoso.com,EMS,,Add\n")[0]
    assert error.row == 1 and "an Action column" in error.message and "and a remove column" in error.message


def test_the_results_csvs_action_column_stays_ignored(catalog: SkuCatalog) -> None:
    data = "row,user,add,status,reason,attempts,action\n2,ada@contoso.com,EMS,failed,no_free_seat,1,add EMS\n"
    csv, ops = parse(catalog, data)
    assert ops[0].add == (LicenseAdd(EMS),)
    assert csv.reading.layout == "results_csv"
    assert "action → ignored (a column of the results CSV)" in columns(csv)


# --- files that list what users hold: the mode decides -------------------------------------------------------------

EXPORT = ("Block credential,City,Display name,Licenses,Object Id,Usage location,User principal name\n"
          "False,Oslo,Ada,Office 365 E3+Enterprise Mobility + Security E3,1,NO,ada@contoso.com\n"
          "False,Oslo,Bob,Unlicensed,2,NO,bob@contoso.com\n")


def test_an_export_without_a_mode_is_refused_with_the_choice(catalog: SkuCatalog) -> None:
    error = errors_of(catalog, EXPORT)[0]
    assert error.row == 1 and error.column == "Licenses"
    assert error.message.startswith('this file lists the licenses each user holds (column "Licenses", layout '
                                    "Microsoft 365 admin center user export), not changes to make; choose mode=exact")
    assert "or mode=add" in error.message


def test_an_export_under_mode_exact(catalog: SkuCatalog) -> None:
    csv, ops = parse(catalog, EXPORT, EXACT)
    assert [(o.user, o.add, o.mode) for o in ops] == [
        ("ada@contoso.com", (LicenseAdd(E3), LicenseAdd(EMS)), LicenseMode.EXACT),
        ("bob@contoso.com", (), LicenseMode.EXACT),
    ]
    assert csv.reading.layout == "m365_admin_center_export" and csv.reading.mode == "exact"
    assert "Licenses → licenses to hold (mode=exact: the others are removed)" in columns(csv)
    assert "Block credential → kept" in columns(csv)


def test_an_export_under_mode_add_adds_and_unlicensed_adds_nothing(catalog: SkuCatalog) -> None:
    csv, ops = parse(catalog, EXPORT, ADD)
    assert [(o.user, o.add, o.mode) for o in ops] == [
        ("ada@contoso.com", (LicenseAdd(E3), LicenseAdd(EMS)), LicenseMode.ADD),
        ("bob@contoso.com", (), LicenseMode.ADD),
    ]
    assert "Licenses → add (the licenses held, mode=add)" in columns(csv)


def test_unlicensed_in_a_plain_file_needs_a_mode(catalog: SkuCatalog) -> None:
    error = errors_of(catalog, "user,licenses\nada@contoso.com,EMS\nbob@contoso.com,Unlicensed\n")[0]
    assert (error.row, error.column, error.value) == (3, "add", "Unlicensed")
    assert "choose mode=exact" in error.message


def test_the_usage_reports_assigned_products(catalog: SkuCatalog) -> None:
    data = ("Report Refresh Date,User Principal Name,Display Name,Assigned Products\n"
            "2025-10-01,ada@contoso.com,Ada,OFFICE 365 E3+ENTERPRISE MOBILITY + SECURITY E3\n")
    assert errors_of(catalog, data)[0].message.startswith('this file lists the licenses each user holds (column '
                                                          '"Assigned Products", layout Microsoft 365 usage report)')
    csv, ops = parse(catalog, data, EXACT)
    assert ops[0].add == (LicenseAdd(E3), LicenseAdd(EMS)) and csv.reading.layout == "m365_usage_report"


def test_exact_mode_refuses_an_empty_list_and_contradicting_columns(catalog: SkuCatalog) -> None:
    error = errors_of(catalog, "user,licenses\nada@contoso.com,\n", EXACT)[0]
    assert error.row == 2 and "write Unlicensed to remove every license" in error.message
    error = errors_of(catalog, "user,add,remove\nada@contoso.com,EMS,\n", EXACT)[0]
    assert error.row == 1 and 'mode=exact reads each row as every license its user should hold, so the column ' \
                              '"remove" contradicts it' in error.message


def test_an_ambiguous_plus_list_is_refused(catalog: SkuCatalog) -> None:
    error = errors_of(catalog, "user,licenses\nada@contoso.com,Made Up Product\n", ADD)[0]
    assert error.message.startswith('unknown license "Made Up Product"')


# --- columns not read but holding licenses -------------------------------------------------------------------------

def test_a_kept_column_holding_licenses_is_refused(catalog: SkuCatalog) -> None:
    error = errors_of(catalog, "user,usage_location,Product\nada@contoso.com,US,Office 365 E3\n")[0]
    assert error == FieldError(
        'column "Product" is not read (it would be kept and echoed in the results), but its value "Office 365 E3" '
        "names the license ENTERPRISEPACK: rename the column to add (or remove) if it lists licenses to assign, or "
        "submit with keep_columns=Product to keep it unread", 2, "Product", "Office 365 E3")


def test_keep_columns_acknowledges_it(catalog: SkuCatalog) -> None:
    csv, ops = parse(catalog, "user,usage_location,Product\nada@contoso.com,US,Office 365 E3\n",
                     JobOptions(keep_columns=("product",)))
    assert ops[0].extra == (("Product", "Office 365 E3"),) and ops[0].add == ()
    assert "Product → kept (keep_columns)" in columns(csv)


@pytest.mark.parametrize(("kept", "message"), [
    ("Nope", 'keep_columns names "Nope", which is not a column of the file'),
    ("add", 'keep_columns names "add", which is read as add; keep_columns is for columns the job does not read'),
])
def test_keep_columns_must_name_a_kept_column(catalog: SkuCatalog, kept: str, message: str) -> None:
    error = errors_of(catalog, "user,add\nada@contoso.com,EMS\n", JobOptions(keep_columns=(kept,)))[0]
    assert (error.message, error.column) == (message, "keep_columns")


# --- kept-column limits -----------------------------------------------------------------------------------------------

def test_too_many_kept_columns_is_refused_at_the_header(catalog: SkuCatalog) -> None:
    header = "user,add," + ",".join(f"c{i}" for i in range(6))
    error = errors_of(catalog, f"{header}\nada@contoso.com,EMS\n", limits=Limits(max_kept_columns=5))[0]
    assert error == FieldError(
        "the header has 6 columns the job would keep (columns it does not read, echoed in the results); the limit is "
        "5 (setting max_kept_columns): remove the columns you do not need", 1)


def test_kept_text_per_row_is_capped_and_empty_kept_cells_are_not_stored(catalog: SkuCatalog) -> None:
    limits = Limits(max_kept_chars_per_row=10)
    ops = ops_of(catalog, "user,add,a,b,c\nada@contoso.com,EMS,,12345,\n", limits=limits)
    assert ops[0].extra == (("b", "12345"),)
    error = errors_of(catalog, "user,add,a,b\nada@contoso.com,EMS,123456,123456\n", limits=limits)[0]
    assert error == FieldError("the kept columns of this row hold 12 characters; the limit is 10 (setting "
                               "max_kept_chars_per_row): remove columns you do not need", 2)


# --- encodings -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("bom", "codec", "name"), [(codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE with BOM"),
                                                    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE with BOM")])
@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_utf16_with_a_bom_is_read(catalog: SkuCatalog, bom: bytes, codec: str, name: str, chunk: int) -> None:
    raw = bom + "user,add,Name\r\nzoë@contoso.com,EMS,Zoë 日本\r\n".encode(codec)
    csv, ops = parse(catalog, raw, chunk=chunk)
    assert [(o.user, o.extra) for o in ops] == [("zoë@contoso.com", (("Name", "Zoë 日本"),))]
    assert csv.reading.encoding == name


def test_a_nul_in_utf16_text_is_refused(catalog: SkuCatalog) -> None:
    raw = codecs.BOM_UTF16_LE + "user,add\r\nada@contoso.com,E\0MS\r\n".encode("utf-16-le")
    error = errors_of(catalog, raw)[0]
    assert error.row == 2 and "NUL" in error.message


def test_utf8_encoding_is_named(catalog: SkuCatalog) -> None:
    assert parse(catalog, "user,add\nada@contoso.com,EMS\n")[0].reading.encoding == "UTF-8"
    assert parse(catalog, "\ufeffuser,add\nada@contoso.com,EMS\n")[0].reading.encoding == "UTF-8 with BOM"


# --- the reading report ----------------------------------------------------------------------------------------------

def test_the_reading_report(catalog: SkuCatalog) -> None:
    csv, _ = parse(catalog, "user;add;Dept;\nada@contoso.com;EMS;HR;\n")
    assert csv.reading.to_json() == {
        "format": "csv", "mode": "add", "encoding": "UTF-8", "delimiter": ";", "layout": "plain",
        "columns": [{"column": "user", "read_as": "user"}, {"column": "add", "read_as": "add"},
                    {"column": "Dept", "read_as": "kept"},
                    {"column": "column 4", "read_as": "ignored (no name: must stay empty)"}],
        "notes": [],
    }
    assert csv.kept_columns == ("Dept",)


# --- JSON under mode=exact ------------------------------------------------------------------------------------------

def test_json_exact_mode(catalog: SkuCatalog) -> None:
    body = {"tenant": "sim", "mode": "sync", "operations": [
        {"user": "ada@contoso.com", "addLicenses": [{"sku": "Office 365 E3"}]},
        {"user": "bob@contoso.com", "addLicenses": []}]}
    _, ops, options = parse_json(json.dumps(body).encode(), {"sim": catalog}.__getitem__, Limits())
    assert options.mode is LicenseMode.EXACT
    assert [(o.add, o.mode) for o in ops] == [((LicenseAdd(E3),), LicenseMode.EXACT), ((), LicenseMode.EXACT)]


@pytest.mark.parametrize(("operation", "column", "message"), [
    ({"user": "ada@contoso.com", "removeLicenses": ["EMS"], "addLicenses": []}, "operations[0].removeLicenses",
     "removeLicenses contradicts it"),
    ({"user": "ada@contoso.com", "usageLocation": "US"}, "operations[0].addLicenses", "mode=exact needs addLicenses"),
])
def test_json_exact_mode_refusals(catalog: SkuCatalog, operation: dict[str, Any], column: str, message: str) -> None:
    body = json.dumps({"tenant": "sim", "mode": "exact", "operations": [operation]}).encode()
    with pytest.raises(InputRejected) as exc:
        parse_json(body, {"sim": catalog}.__getitem__, Limits())
    assert exc.value.errors[0].column == column and message in exc.value.errors[0].message


def test_json_mode_given_twice_differently(catalog: SkuCatalog) -> None:
    body = json.dumps({"tenant": "sim", "mode": "add",
                       "operations": [{"user": "a@contoso.com", "usageLocation": "US"}]})
    with pytest.raises(InputRejected, match="mode is given twice, differently: exact in the query, add in the body"):
        parse_json(body.encode(), {"sim": catalog}.__getitem__, Limits(), LicenseMode.EXACT)


def test_passwords_are_neither_read_nor_kept(catalog: SkuCatalog) -> None:
    data = ("version:v1.0\nUser name [userPrincipalName] Required,Initial password [passwordProfile] Required,"
            "Usage location [usageLocation]\nada@contoso.com,=Secret-Only!1,US\n")
    csv, ops = parse(catalog, data)
    assert ops[0].extra == () and "Secret" not in repr(ops[0])
    assert "Initial password [passwordProfile] Required → ignored (a password: never stored)" in columns(csv)


def test_held_licenses_beside_licenses_to_add_is_refused(catalog: SkuCatalog) -> None:
    data = "User principal name,Licenses,Block credential,Object Id,add\nada@contoso.com,EMS,False,1,EMS\n"
    error = errors_of(catalog, data, EXACT)[0]
    assert error == FieldError('columns "Licenses" (the licenses users hold) and "add" (licenses to add) cannot both '
                               "be read; keep one of them", 1, "held")


def test_an_exports_assignment_details_are_kept_not_taken_for_licenses(catalog: SkuCatalog) -> None:
    data = ("User principal name,Licenses,License assignment details,Block credential,Object Id\n"
            "ada@contoso.com,Office 365 E3,Office 365 E3,False,1\n")
    csv, ops = parse(catalog, data, EXACT)
    assert ops[0].add == (LicenseAdd(E3),)
    assert "License assignment details → kept (how the held licenses are assigned; not read)" in columns(csv)
    # The same column in a file that is not an export is checked like any other.
    plain = "user,usage_location,License assignment details\nada@contoso.com,US,Office 365 E3\n"
    assert errors_of(catalog, plain)[0].column == "License assignment details"
