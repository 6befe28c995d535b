"""Microsoft's product-names table: the shipped data, and its refresh from Microsoft's CSV or markdown page."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from jobs.product_names import ProductNames, name_key, shipped
from jobs.product_names_source import SourceError, build, decode, dumps, main, read_csv, read_markdown, read_source

E3 = "6fd2c87f-b296-42f0-b197-1e91e994b900"
EMS_E5 = "b05e124f-c7cc-45a0-a6aa-8cf78c946968"
BP_NO_TEAMS = "00e1ec7b-e4a3-40d1-9441-b69b597ab222"

# Rows as in Microsoft's CSV: one per product and service plan, so products repeat.
HEADER = "Product_Display_Name,String_Id,GUID,Service_Plan_Name,Service_Plan_Id,Service_Plans_Included_Friendly_Names"
CSV_ROWS = [
    f"Office 365 E3,ENTERPRISEPACK,{E3},SWAY,a23b959c-7ce8-4e57-9140-b90eb88a9e97,Sway",
    f"Office 365 E3,ENTERPRISEPACK,{E3},TEAMS1,57ff2da0-773e-42df-b2af-ffb7a2317929,Microsoft Teams",
    f"Enterprise Mobility + Security E5,EMSPREMIUM,{EMS_E5},AAD_PREMIUM,41781fb2-bc02-4b7c-bd55-b576c07bb09d,P1",
    # Older copies: part numbers with a trailing tab / NBSP, an inner-space part number, runs of spaces.
    "Microsoft 365 Business Premium  (no Teams),Microsoft_365_ Business_ Premium_(no Teams)\u00a0\t,"
    f"{BP_NO_TEAMS.upper()},X,00000000-0000-0000-0000-000000000001,X",
]


def test_the_shipped_table_says_where_and_when_it_came_from() -> None:
    table = shipped()
    source = table.source
    assert source["title"] == "Product names and service plan identifiers for licensing"
    assert "MicrosoftDocs/entra-docs" in source["read_from"]
    assert "licensing-service-plan-reference.md" in source["read_from"]
    assert source["source_date"] == "2025-10-29"
    assert source["products"] == len(table.products) > 500
    assert [p.part_number for p in table.named("Office 365 E3")] == ["ENTERPRISEPACK"]
    assert table.names_of(E3) == ("Office 365 E3",)


def test_display_names_shared_by_several_skus_keep_every_candidate() -> None:
    assert sorted(p.part_number for p in shipped().named("Microsoft 365 F1")) == ["M365_F1", "M365_F1_COMM"]
    assert shipped().source["ambiguous_names"] == sum(
        1 for key in {name_key(p.name) for p in shipped().products}
        if len({p.sku_id for p in shipped().products if name_key(p.name) == key}) > 1)


def test_names_match_without_case_spacing_or_dash_kind() -> None:
    table = ProductNames.from_json({"products": [["Power Apps per app plan – GCC", "P", E3]]})
    for text in ("POWER APPS PER APP PLAN - GCC", "power apps per app plan\u00a0– gcc", "Power Apps per app plan—GCC"):
        assert [p.part_number for p in table.named(text)] == ["P"], text


def test_microsofts_csv_with_its_quirks() -> None:
    raw = codecs.BOM_UTF8 + "\r\n".join([HEADER, *CSV_ROWS, ""]).encode()
    form, products = read_source(decode(raw))
    assert form == "csv"
    assert [(p.name, p.part_number, p.sku_id) for p in products] == [
        ("Office 365 E3", "ENTERPRISEPACK", E3),
        ("Enterprise Mobility + Security E5", "EMSPREMIUM", EMS_E5),
        ("Microsoft 365 Business Premium (no Teams)", "Microsoft_365_ Business_ Premium_(no Teams)", BP_NO_TEAMS),
    ]


def test_older_header_string_space_id_and_a_bom_read_as_latin_1() -> None:
    text = "ï»¿" + HEADER.replace("String_Id", "String_ Id") + "\n" + CSV_ROWS[0] + "\n"
    assert [p.part_number for p in read_csv(text)] == ["ENTERPRISEPACK"]


def test_a_row_with_a_broken_guid_is_refused_not_skipped() -> None:
    with pytest.raises(SourceError, match="line 2: GUID 'not-a-guid' of 'Office 365 E3' is not a GUID"):
        read_csv(f"{HEADER}\nOffice 365 E3,ENTERPRISEPACK,not-a-guid,S,x,y\n")


def test_a_csv_without_the_columns_is_refused() -> None:
    with pytest.raises(SourceError, match="no column for guid, part"):
        read_csv("Product_Display_Name,Something\nOffice 365 E3,x\n")


def test_the_markdown_page() -> None:
    page = (
        "---\ntitle: Product names\nms.date: 10/29/2025\n---\n\n# Product names\n\n"
        "| Product name | String ID | GUID | Service plans included | Service plans included (friendly names) |\n"
        "| --- | --- | --- | --- | --- |\n"
        f"| Office 365 E3\t| ENTERPRISEPACK\t| {E3}\t| SWAY (a23b...) | Sway |\n"
        f"|Enterprise Mobility + Security E5|\tEMSPREMIUM |{EMS_E5} | x | y |\n"
        "\n| Service Plan Name | GUID |\n| --- | --- |\n| CRMPLAN1\t| 119cf168-b6cf-41fb-b82e-7fee7bae5814 |\n"
    )
    assert [(p.name, p.part_number) for p in read_markdown(page)] == [
        ("Office 365 E3", "ENTERPRISEPACK"), ("Enterprise Mobility + Security E5", "EMSPREMIUM")]


def test_the_data_file_round_trips(tmp_path: Path) -> None:
    source = tmp_path / "licensing.csv"
    source.write_bytes(codecs.BOM_UTF8 + "\n".join([HEADER, *CSV_ROWS]).encode())
    out = tmp_path / "product_names.json"
    assert main([str(source), "--origin", "https://download.example/licensing.csv", "--date", "2025-10-29",
                 "--out", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["source"]["read_from"] == "https://download.example/licensing.csv"
    assert (data["source"]["source_date"], data["source"]["format"], data["source"]["products"]) == (
        "2025-10-29", "csv", 3)
    table = ProductNames.from_json(data)
    assert [p.sku_id for p in table.named("enterprise mobility + security e5")] == [EMS_E5]
    assert dumps(build(read_csv("\n".join([HEADER, *CSV_ROWS])), origin="x", source_date="d", form="csv",
                       refreshed="r")) == dumps(build(table.products, origin="x", source_date="d", form="csv",
                                                      refreshed="r"))


def test_the_script_refuses_a_file_that_is_not_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "other.csv"
    source.write_text("a,b\n1,2\n")
    assert main([str(source), "--origin", "x", "--out", str(tmp_path / "out.json")]) == 1
    assert "no column for" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
