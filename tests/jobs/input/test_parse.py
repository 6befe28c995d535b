"""CSV and JSON job input: valid files, every refusal with its exact error, and the hostile corpus."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from jobs.input import CsvParse, Limits, parse_csv, parse_json
from jobs.input.errors import MAX_KEPT_ERRORS
from jobs.models import FieldError, InputRejected, JobOptions, License, Operation
from jobs.skus import SkuCatalog
from tests.corpus.generators import GENERATORS

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
EMS = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
E5 = "06ebc4ee-1bb5-47dd-8120-11324bc54e06"
PBI = "f8a1db68-be16-40ed-86d5-cb42ce701560"
SWAY = "a23b959c-7ce8-4e57-9140-b90eb88a9e97"
TEAMS1 = "57ff2da0-773e-42df-b2af-ffb7a2317929"
INTUNE_A = "c1ec4a95-1f05-45b3-a911-aa3fa01094f5"
LIMITS = Limits()


@pytest.fixture(scope="module")
def catalog() -> SkuCatalog:
    """The corpus tenant's catalog."""
    items = json.loads((CORPUS / MANIFEST["subscribed_skus"]).read_text(encoding="utf-8"))["value"]
    return SkuCatalog.from_graph(items)


def csv_parse(catalog: SkuCatalog, data: str | bytes, limits: Limits = LIMITS, chunk: int = 0) -> CsvParse:
    """A parse of `data`, in chunks of `chunk` bytes (0 = one chunk)."""
    raw = data.encode() if isinstance(data, str) else data
    chunks = [raw[i : i + chunk] for i in range(0, len(raw), chunk)] if chunk else [raw]
    return parse_csv(chunks, catalog, limits)


def csv_ops(catalog: SkuCatalog, data: str | bytes, **kwargs: Any) -> list[Operation]:
    """The operations of a CSV that must be valid."""
    parse = csv_parse(catalog, data, **kwargs)
    ops = list(parse)
    assert (parse.errors, parse.total_errors) == ([], 0), parse.errors
    return ops


def rejection(parse: CsvParse) -> InputRejected:
    """What the submission raises for an unread parse that finds errors, once all of it is read."""
    for _ in parse:
        pass
    assert parse.errors, "expected errors"
    return InputRejected(parse.errors, parse.total_errors, parse.status_code)


def csv_errors(catalog: SkuCatalog, data: str | bytes, limits: Limits = LIMITS) -> list[FieldError]:
    """The errors of a CSV that must be refused, after checking nothing was yielded."""
    parse = csv_parse(catalog, data, limits)
    ops = list(parse)
    assert parse.errors, "expected errors"
    if parse.errors[0].row is not None:
        assert all(op.row < parse.errors[0].row for op in ops)
    assert parse.total_errors >= len(parse.errors)
    return parse.errors


# -- CSV: valid input ----------------------------------------------------------------------------


def test_full_featured_csv(catalog: SkuCatalog) -> None:
    data = (
        "\ufeffUser Principal Name;Licenses;Remove_Licenses;disabled-plans;UsageLocation;EmployeeId;status\r\n"
        "ada@contoso.com;ENTERPRISEPACK|spe_e5;EMS;sway;gb;E-1001;failed\r\n"
        "\r\n"
        "bob@contoso.com;;ems;;;E-1002;\r\n"
        '2b1c6c0e-33a4-4c1d-8b5b-3f5b7c2e9a10;"POWER_BI_PRO; STANDARDPACK";;;us;"E-1003\n(night shift)";\r\n'
        "cy@contoso.com;;;;FR;+44 20 7946 0000;\r\n"
    )
    ops = csv_ops(catalog, data)
    assert len(ops) == 4
    assert ops[0] == Operation(
        row=2,
        user="ada@contoso.com",
        add=(License(E3, (SWAY,)), License(E5, (SWAY,))),
        remove=(EMS,),
        usage_location="GB",
        extra=(("EmployeeId", "E-1001"),),
        source=(
            ("add", "ENTERPRISEPACK|spe_e5"),
            ("remove", "EMS"),
            ("disabled_plans", "sway"),
            ("usage_location", "gb"),
        ),
    )
    assert ops[1].row == 4 and ops[1].add == () and ops[1].remove == (EMS,)
    assert ops[2].row == 5
    assert ops[2].user == "2b1c6c0e-33a4-4c1d-8b5b-3f5b7c2e9a10"
    assert ops[2].add == (License(PBI), License("18181a46-0d4e-45cd-891e-60aabd171b4e"))
    assert ops[2].extra == (("EmployeeId", "E-1003\n(night shift)"),)
    assert ops[3].row == 7  # the quoted cell above spans two lines
    assert ops[3].usage_location == "FR" and ops[3].extra == (("EmployeeId", "+44 20 7946 0000"),)


def test_swap_is_one_operation_with_plans_by_name_and_id(catalog: SkuCatalog) -> None:
    ops = csv_ops(catalog, f"upn,add,remove,disabledPlans\nada@contoso.com,SPE_E5,ENTERPRISEPACK,{INTUNE_A};Sway\n")
    assert ops == [
        Operation(
            row=2,
            user="ada@contoso.com",
            add=(License(E5, (INTUNE_A, SWAY)),),
            remove=(E3,),
            source=(("add", "SPE_E5"), ("remove", "ENTERPRISEPACK"), ("disabled_plans", f"{INTUNE_A};Sway")),
        )
    ]


def test_sku_ids_and_aliases(catalog: SkuCatalog) -> None:
    ops = csv_ops(catalog, f"ID,SKU,removeLicenses\nada@contoso.com,{E3.upper()},{EMS}\n")
    assert ops[0].add == (License(E3),) and ops[0].remove == (EMS,)


def test_results_csv_columns_are_ignored_on_resubmission(catalog: SkuCatalog) -> None:
    data = (
        "row,user,status,reason,graph_code,graph_message,http_status,attempts,updated_at,detail,add,Dept\n"
        '7,ada@contoso.com,failed,no_free_seat,CountViolation,"-- no seats =(",400,1,1700000000.5,,EMS,HR\n'
    )
    ops = csv_ops(catalog, data)
    assert ops[0].row == 2 and ops[0].extra == (("Dept", "HR"),) and ops[0].source == (("add", "EMS"),)


def test_the_group_columns_of_a_results_csv_are_ignored_but_an_admins_own_note_is_kept(catalog: SkuCatalog) -> None:
    results = ("row,user,status,reason,attempts,add,note,groups\n"
               "2,ada@contoso.com,unchanged,,1,EMS,held_via_group,EMS via Sales (0a0a0a0a-1111)\n")
    assert csv_ops(catalog, results)[0].extra == ()
    own = csv_ops(catalog, "user,add,note\nada@contoso.com,EMS,new hire\n")
    assert own[0].extra == (("note", "new hire"),)


def test_streaming_across_tiny_chunks(catalog: SkuCatalog) -> None:
    data = "\ufeffuser,add,Name\r\nzoë@contoso.com,EMS,Zoë Ünal 日本\r\nbob@contoso.com,ENTERPRISEPACK,Bob\r\n"
    for chunk in (1, 2, 3, 7):
        ops = csv_ops(catalog, data, chunk=chunk)
        assert [(o.row, o.user, o.extra) for o in ops] == [
            (2, "zoë@contoso.com", (("Name", "Zoë Ünal 日本"),)),
            (3, "bob@contoso.com", (("Name", "Bob"),)),
        ]


def test_last_line_without_newline_and_blank_lines(catalog: SkuCatalog) -> None:
    ops = csv_ops(catalog, "\n\nuser,add\n\n\n ada@contoso.com ,EMS\n,\n\nbob@contoso.com,EMS")
    assert [(o.row, o.user) for o in ops] == [(6, "ada@contoso.com"), (9, "bob@contoso.com")]


def test_200k_rows_stream_in_seconds(catalog: SkuCatalog) -> None:
    def rows() -> Iterator[bytes]:
        yield b"user,add,remove,usage_location,EmployeeId\n"
        for start in range(0, 200_000, 5_000):
            yield b"".join(
                b"user%d@contoso.com,ENTERPRISEPACK,EMS,US,E%d\n" % (i, i) for i in range(start, start + 5_000)
            )

    began = time.perf_counter()
    parse = parse_csv(rows(), catalog, LIMITS)
    count = sum(1 for _ in parse)
    elapsed = time.perf_counter() - began
    assert (count, parse.total_errors) == (200_000, 0)
    assert elapsed < 30, f"{elapsed:.1f}s"


# -- CSV: refusals -------------------------------------------------------------------------------


def first_error(catalog: SkuCatalog, data: str | bytes, limits: Limits = LIMITS) -> FieldError:
    return csv_errors(catalog, data, limits)[0]


def test_malformed_guid(catalog: SkuCatalog) -> None:
    assert first_error(catalog, "user,add\n1234-abcd,EMS\n") == FieldError(
        'user "1234-abcd" is neither a userPrincipalName (name@domain) nor a valid object id '
        "(a GUID such as 2b1c6c0e-33a4-4c1d-8b5b-3f5b7c2e9a10)",
        row=2,
        column="user",
        value="1234-abcd",
    )


def test_overlong_upn(catalog: SkuCatalog) -> None:
    upn = "a" * 60 + "@" + "b" * 60 + ".com"
    error = first_error(catalog, f"user,add\n{upn},EMS\n")
    assert (error.row, error.column, error.value) == (2, "user", upn[:100] + "…")
    assert "is longer than 113 characters (125), the maximum for a userPrincipalName" in error.message


def test_duplicate_users_name_the_first_row(catalog: SkuCatalog) -> None:
    errors = csv_errors(catalog, "user,add\nada@contoso.com,EMS\nbob@contoso.com,EMS\nADA@contoso.com,SPE_E5\n")
    assert errors == [
        FieldError(
            'user "ADA@contoso.com" appears more than once: first in row 2; give each user one row '
            "(one row can both add and remove licenses)",
            row=4,
            column="user",
            value="ADA@contoso.com",
        )
    ]


def test_unknown_sku_with_suggestion(catalog: SkuCatalog) -> None:
    assert first_error(catalog, "user,add\nada@contoso.com,EMS;SPE-E5\n") == FieldError(
        'unknown license "SPE-E5": no subscribed SKU has this skuPartNumber; did you mean SPE_E5?',
        row=2,
        column="add",
        value="SPE-E5",
    )


def test_every_bad_name_in_a_row_is_reported(catalog: SkuCatalog) -> None:
    errors = csv_errors(catalog, "user,add,remove\nada@contoso.com,EMX|ENTERPRISEPAK,SPE_E6\n")
    assert [(e.column, e.value) for e in errors] == [("add", "EMX"), ("add", "ENTERPRISEPAK"), ("remove", "SPE_E6")]


def test_added_and_removed(catalog: SkuCatalog) -> None:
    assert first_error(catalog, f"user,add,remove\nada@contoso.com,EMS,{EMS}\n") == FieldError(
        "license EMS is both added and removed in this row; keep it in one column only",
        row=2,
        column="remove",
        value=EMS,
    )


def test_plan_errors(catalog: SkuCatalog) -> None:
    error = first_error(catalog, "user,add,disabled_plans\nada@contoso.com,EMS;POWER_BI_PRO,SWAY\n")
    assert error == FieldError(
        "plan SWAY is not in any added SKU (EMS, POWER_BI_PRO); disable it only in a row that adds a SKU containing it",
        row=2,
        column="disabled_plans",
        value="SWAY",
    )
    error = first_error(catalog, "user,add,disabled_plans\nada@contoso.com,ENTERPRISEPACK,Exchange_S_Enterprize\n")
    assert error.message.endswith("did you mean EXCHANGE_S_ENTERPRISE?")
    error = first_error(catalog, "user,remove,disabled_plans\nada@contoso.com,EMS,SWAY\n")
    assert error == FieldError(
        "disabled_plans needs licenses in add: plans can only be disabled in SKUs this row adds",
        row=2,
        column="disabled_plans",
        value="SWAY",
    )


def test_plans_are_not_checked_against_a_broken_add(catalog: SkuCatalog) -> None:
    errors = csv_errors(catalog, "user,add,disabled_plans\nada@contoso.com,ENTERPRISEPAK,SWAY\n")
    assert [e.column for e in errors] == ["add"]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("UK", 'usage_location "UK" is not an ISO 3166-1 alpha-2 country code; did you mean GB?'),
        ("XK", 'usage_location "XK" is not an assigned ISO 3166-1 alpha-2 country code'),
        ("U.S.", 'usage_location "U.S." is not an ISO 3166-1 alpha-2 country code; use two letters'),
    ],
)
def test_usage_location(catalog: SkuCatalog, code: str, message: str) -> None:
    error = first_error(catalog, f"user,usage_location\nada@contoso.com,{code}\n")
    assert (error.row, error.column, error.value) == (2, "usage_location", code)
    assert error.message.startswith(message)


def test_row_that_changes_nothing(catalog: SkuCatalog) -> None:
    assert first_error(catalog, "user,add,remove,Dept\nada@contoso.com,, ;,HR\n") == FieldError(
        "row changes nothing: give licenses in add or remove, or a usage_location", row=2
    )


@pytest.mark.parametrize(
    ("cell", "starts"),
    [
        ('"=HYPERLINK(""http://x.example"",""x"")"', 'starts with "="'),
        ("@SUM(A1)", 'starts with "@"'),
        ("+1+cmd|'/C calc'!A0", 'starts with "+"'),
        ("-2+3+cmd|'/C calc'!A0", 'starts with "-"'),
        ('"\tx"', "starts with a tab"),
        ('"\rx"', "starts with a carriage return"),
    ],
)
def test_formula_cells(catalog: SkuCatalog, cell: str, starts: str) -> None:
    error = first_error(catalog, f"user,add,Notes\nada@contoso.com,EMS,{cell}\n")
    assert (error.row, error.column) == (2, "Notes")
    assert error.message == (
        f"Notes looks like a spreadsheet formula ({starts}), which spreadsheet apps would run; "
        "remove the leading character"
    )


@pytest.mark.parametrize("cell", ["+44 20 7946 0000", "-12.5", "+1 (555) 010-9999", "-", "2024-01-01", "a=b"])
def test_harmless_cells_pass(catalog: SkuCatalog, cell: str) -> None:
    assert csv_ops(catalog, f"user,add,Notes\nada@contoso.com,EMS,{cell}\n")[0].extra == (("Notes", cell),)


def test_control_character(catalog: SkuCatalog) -> None:
    assert first_error(catalog, "user,add\nada@contoso.com,EMS\x1b[31m\n") == FieldError(
        "add contains a control character (U+001B); remove it", row=2, column="add", value="EMS\x1b[31m"
    )


def test_long_cell_is_a_row_error_and_parsing_goes_on(catalog: SkuCatalog) -> None:
    errors = csv_errors(catalog, "user,add,Notes\nada@contoso.com,EMS," + "n" * 1500 + "\n1234,EMS,\n")
    assert [(e.row, e.column) for e in errors] == [(2, "Notes"), (3, "user")]
    assert errors[0].message == "Notes is 1,500 characters long; the limit is 1,024 characters"
    assert errors[0].value == "n" * 100 + "…"


def test_huge_cell_stops_parsing_without_holding_it(catalog: SkuCatalog) -> None:
    read: list[int] = []

    def chunks() -> Iterator[bytes]:
        for chunk in GENERATORS["ten_mb_cell"]():
            read.append(len(chunk))
            yield chunk

    parse = parse_csv(chunks(), catalog, LIMITS)
    assert list(parse) == []
    assert parse.errors == [
        FieldError(
            "a cell is longer than 1,024 characters, the limit; shorten it (parsing stopped here)",
            row=2,
            column="EmployeeId",
            value="x" * 100 + "…",
        )
    ]
    assert sum(read) < 3 << 20  # stopped within the first chunks of the cell


def test_unclosed_quote_in_a_long_file_is_named(catalog: SkuCatalog) -> None:
    rows = "".join(f"u{i}@contoso.com,EMS\n" for i in range(2000))
    error = first_error(catalog, f'user,add\nada@contoso.com,"EMS\n{rows}')
    assert error.row == 2
    assert "a quoted cell starting in row 2 is still open after" in error.message
    assert "unbalanced quote" in error.message


def test_text_after_a_closing_quote_is_named_after_a_quoted_carriage_return(catalog: SkuCatalog) -> None:
    assert first_error(catalog, 'user,add,Notes\r\nada@contoso.com,EMS,"a\rb"x\r\n') == FieldError(
        'row 2 has text right after a closing quote; inside a quoted cell write a quote as "" (two quotes)', row=2
    )


def test_bare_carriage_return_in_a_data_row(catalog: SkuCatalog) -> None:
    assert first_error(catalog, 'user,add\nada@contoso.com,"EMS"\rbob@contoso.com,EMS\n') == FieldError(
        "row 2 ends with a bare carriage return; save the file with Windows (CRLF) or Unix (LF) line endings", row=2
    )


def test_quoted_quotes_and_line_breaks_are_kept(catalog: SkuCatalog) -> None:
    ops = csv_ops(catalog, 'user,add,Notes\r\nada@contoso.com,EMS,"say ""hi""\r\nthere, ""you"""\r\n')
    assert ops[0].extra == (("Notes", 'say "hi"\r\nthere, "you"'),)


def test_cell_past_the_csv_readers_own_limit(catalog: SkuCatalog) -> None:
    # 200 columns make a row long enough for one cell to pass csv.reader's 131,072-character limit.
    columns = ",".join(f"c{i}" for i in range(200))
    data = f"user,add,{columns}\nada@contoso.com,EMS,{'x' * 140_000}{',' * 199}\n"
    wide = Limits(max_kept_columns=200)
    error = first_error(catalog, data, wide)
    assert error == FieldError("a cell in row 2 is longer than 1,024 characters, the limit", row=2)


def test_row_limit(catalog: SkuCatalog) -> None:
    data = "user,add\n" + "".join(f"u{i}@contoso.com,EMS\n" for i in range(6))
    parse = csv_parse(catalog, data, Limits(max_rows=5))
    assert len(list(parse)) == 5
    assert parse.errors == [
        FieldError("the file has more than 5 data rows, the limit for one job; split it into several files", row=7)
    ]
    assert parse.status_code == 422


def test_upload_limit_is_413(catalog: SkuCatalog) -> None:
    data = "user,add\n" + "".join(f"u{i}@contoso.com,EMS\n" for i in range(200))
    rejected = rejection(csv_parse(catalog, data, Limits(max_upload_bytes=2048), chunk=1000))
    assert rejected.status_code == 413
    assert rejected.errors[-1].message == "the file is larger than 2 KB, the upload limit; split it into several jobs"


def test_invalid_utf8_split_across_chunks_reports_its_offset(catalog: SkuCatalog) -> None:
    data = "user,add,Name\nada@contoso.com,EMS,Zoë\n".encode() + b"bob@contoso.com,EMS,Jos\xe9\n"
    offset = data.index(b"\xe9")
    for chunk in (0, 1, 5):
        error = first_error(catalog, data) if not chunk else _first_chunked(catalog, data, chunk)
        assert error.row == 3
        assert error.message.startswith(f"the file is not UTF-8 text: byte 0xE9 at byte offset {offset:,} (line 3)")


def _first_chunked(catalog: SkuCatalog, data: bytes, chunk: int) -> FieldError:
    parse = csv_parse(catalog, data, chunk=chunk)
    list(parse)
    return parse.errors[0]


def test_truncated_multibyte_character_at_the_end(catalog: SkuCatalog) -> None:
    error = first_error(catalog, b"user,add\nada@contoso.com,EMS\n" + "é".encode()[:1])
    assert error.message.startswith("the file is not UTF-8 text: byte 0xC3 at byte offset 29")


def test_errors_are_capped_but_all_counted(catalog: SkuCatalog) -> None:
    data = "user,add\n" + "".join(f"bad{i},EMS\n" for i in range(1500))
    parse = csv_parse(catalog, data)
    assert list(parse) == []
    assert len(parse.errors) == MAX_KEPT_ERRORS
    assert parse.total_errors == 1500
    assert "(and 1499 more)" in str(InputRejected(parse.errors, parse.total_errors, parse.status_code))


def test_no_operation_is_yielded_after_the_first_error(catalog: SkuCatalog) -> None:
    parse = csv_parse(catalog, "user,add\nada@contoso.com,EMS\nbad,EMS\nbob@contoso.com,EMS\n")
    assert [op.row for op in parse] == [2]
    assert [e.row for e in parse.errors] == [3] and parse.total_errors == 1


def test_parse_is_single_use(catalog: SkuCatalog) -> None:
    parse = csv_parse(catalog, "user,add\nada@contoso.com,EMS\n")
    assert [op.row for op in parse] == [2]
    with pytest.raises(RuntimeError):
        iter(parse)


def test_limits_from_settings() -> None:
    settings = Settings(max_rows=10, max_upload_bytes=4096, max_cell_chars=100, max_json_bytes=2048)
    assert Limits.from_settings(settings) == Limits(10, 4096, 100, 2048)


# -- JSON ----------------------------------------------------------------------------------------


def json_body(operations: list[dict[str, Any]], tenant: str = "sim") -> bytes:
    return json.dumps({"tenant": tenant, "operations": operations}).encode()


def json_error(catalog: SkuCatalog, body: bytes, limits: Limits = LIMITS) -> InputRejected:
    with pytest.raises(InputRejected) as exc:
        parse_json(body, lambda t: {"sim": catalog}[t], limits)
    return exc.value


def test_json_valid_including_a_graph_shaped_body(catalog: SkuCatalog) -> None:
    body = json_body(
        [
            {
                "user": "ada@contoso.com",
                "addLicenses": [{"sku": "enterprisepack", "disabledPlans": ["SWAY", TEAMS1]}],
                "removeLicenses": ["EMS"],
                "usageLocation": "de",
                "extra": {"EmployeeId": "1001"},
            },
            {"user": "bob@contoso.com", "addLicenses": [{"skuId": E5, "disabledPlans": [SWAY]}], "removeLicenses": []},
            {"user": "cy@contoso.com", "addLicenses": [{"sku": PBI, "disabledPlans": None}], "usageLocation": None},
        ]
    )
    tenant, ops, options = parse_json(body, {"sim": catalog}.__getitem__, LIMITS)
    assert (tenant, options) == ("sim", JobOptions())
    assert ops[0] == Operation(
        row=1,
        user="ada@contoso.com",
        add=(License(E3, (SWAY, TEAMS1)),),
        remove=(EMS,),
        usage_location="DE",
        extra=(("EmployeeId", "1001"),),
        source=(
            ("add", "enterprisepack"),
            ("remove", "EMS"),
            ("disabled_plans", f"SWAY;{TEAMS1}"),
            ("usage_location", "DE"),
        ),
    )
    assert ops[1].row == 2 and ops[1].add == (License(E5, (SWAY,)),)
    assert ops[2].add == (License(PBI),)


def test_json_type_and_field_errors(catalog: SkuCatalog) -> None:
    body = json_body(
        [
            {"user": "ada@contoso.com", "removeLicenses": ["EMS"]},
            {"user": "bob@contoso.com", "addLicenses": [{"sku": 5}], "licence": []},
        ]
    )
    rejected = json_error(catalog, body)
    assert rejected.status_code == 422
    assert rejected.errors == [
        FieldError(
            "operations[1].addLicenses[0].sku must be a string, not a number",
            2,
            "operations[1].addLicenses[0].sku",
            "5",
        ),
        FieldError(
            'operations[1].licence: unknown field "licence"; allowed here: user, addLicenses, removeLicenses, '
            "usageLocation, extra, effectiveDate, endDate",
            2,
            "operations[1].licence",
            "[… 0 items]",
        ),
    ]


def test_json_bool_is_not_a_string(catalog: SkuCatalog) -> None:
    rejected = json_error(catalog, json_body([{"user": True, "removeLicenses": ["EMS"]}]))
    assert rejected.errors[0].message == "operations[0].user must be a string, not a boolean"


def test_json_semantic_errors_use_paths(catalog: SkuCatalog) -> None:
    body = json_body(
        [
            {"user": "ada@contoso.com", "addLicenses": [{"sku": "ENTERPRISEPACK", "disabledPlans": ["SWAYY"]}]},
            {"user": "ada@contoso.com", "usageLocation": "UK"},
            {"user": "bob@contoso.com", "addLicenses": [{}]},
            {"user": "cy@contoso.com", "addLicenses": [{"sku": "EMS"}, {"skuId": EMS}]},
        ]
    )
    rejected = json_error(catalog, body)
    assert [(e.row, e.column) for e in rejected.errors] == [
        (1, "operations[0].addLicenses[0].disabledPlans[0]"),
        (2, "operations[1].user"),
        (2, "operations[1].usageLocation"),
        (3, "operations[2].addLicenses[0]"),
        (4, "operations[3].addLicenses[1].skuId"),
    ]
    assert rejected.errors[0].message.endswith("did you mean SWAY?")
    assert (
        rejected.errors[2].message == 'usageLocation "UK" is not an ISO 3166-1 alpha-2 country code; did you mean GB?'
    )
    assert rejected.errors[4].message == "license EMS is listed twice in addLicenses; list it once"


def test_json_sku_id_must_be_a_guid(catalog: SkuCatalog) -> None:
    rejected = json_error(catalog, json_body([{"user": "ada@contoso.com", "addLicenses": [{"skuId": " EMS "}]}]))
    assert rejected.errors == [
        FieldError(
            'operations[0].addLicenses[0].skuId "EMS" is not a skuId (a GUID such as '
            '6fd2c87f-b296-42f0-b197-1e91e994b900); give a skuPartNumber in "sku" instead',
            1,
            "operations[0].addLicenses[0].skuId",
            "EMS",
        )
    ]
    body = json_body([{"user": "ada@contoso.com", "addLicenses": [{"skuId": f" {EMS.upper()} "}]}])
    assert parse_json(body, {"sim": catalog}.__getitem__, LIMITS)[1][0].add == (License(EMS),)


def test_json_limits(catalog: SkuCatalog) -> None:
    ops = [{"user": f"u{i}@contoso.com", "removeLicenses": ["EMS"]} for i in range(4)]
    rejected = json_error(catalog, json_body(ops), Limits(max_rows=3))
    assert rejected.errors == [
        FieldError(
            "operations has 4 items, more than the limit of 3 per job; split it into several jobs",
            column="operations",
        )
    ]
    rejected = json_error(catalog, json_body(ops), Limits(max_json_bytes=100))
    assert rejected.status_code == 413
    assert rejected.errors[0].message.startswith("the JSON body is 2")


def test_json_depth_limit_and_stack_safety(catalog: SkuCatalog) -> None:
    body = b'{"tenant": "sim", "operations": ' + b"[" * 33 + b"]" * 33 + b"}"
    rejected = json_error(catalog, body)
    assert rejected.errors[0].message.startswith("the JSON is nested deeper than 32 levels (at operations")
    rejected = json_error(catalog, b"[" * 200_000)
    assert rejected.errors == [FieldError("the JSON is nested deeper than 32 levels; a job body needs at most 6")]


# -- the hostile corpus --------------------------------------------------------------------------


def test_manifest_is_complete() -> None:
    cases = MANIFEST["cases"]
    assert len(cases) >= 30
    assert len({c["name"] for c in cases}) == len(cases)
    for case in cases:
        assert (case["file"] is None) != (case["generator"] is None), case["name"]
        assert case["file"] is None or (CORPUS / case["file"]).is_file(), case["name"]
        assert case["generator"] is None or case["generator"] in GENERATORS, case["name"]
        assert case["content_type"] in ("text/csv", "application/json")
        assert set(case["expect"]) == {"status", "row", "column", "message"}
    assert Limits(**MANIFEST["limits"]) == LIMITS


def _body(case: dict[str, Any]) -> Iterable[bytes]:
    if case["generator"]:
        return GENERATORS[case["generator"]]()
    return [(CORPUS / case["file"]).read_bytes()]


SLOW_CASES = {"two_million_rows"}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c["name"], marks=[pytest.mark.slow] if c["name"] in SLOW_CASES else [])
        for c in MANIFEST["cases"]
    ],
)
def test_corpus_case(catalog: SkuCatalog, case: dict[str, Any]) -> None:
    limits = Limits(**MANIFEST["limits"])
    if case["content_type"] == "text/csv":
        rejected = rejection(parse_csv(_body(case), catalog, limits))
    else:
        with pytest.raises(InputRejected) as exc:
            parse_json(b"".join(_body(case)), {case["tenant"]: catalog}.__getitem__, limits)
        rejected = exc.value
    expect = case["expect"]
    first = rejected.errors[0]
    assert rejected.status_code == expect["status"]
    assert (first.row, first.column) == (expect["row"], expect["column"]), first
    assert expect["message"] in first.message, first.message


def test_header_line_without_end_is_bounded(catalog: SkuCatalog) -> None:
    parse = parse_csv(iter([b"x" * 65_536, b"x" * 65_536]), catalog, LIMITS)
    assert list(parse) == []
    assert parse.errors[0].message == (
        "the header line is longer than 65,536 characters, the limit; shorten it (parsing stopped here)"
    )
    assert parse.errors[0].row == 1
