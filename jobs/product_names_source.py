"""Refresh jobs/data/product_names.json from a downloaded copy of Microsoft's licensing table.

    python -m jobs.product_names_source licensing.csv --origin "<where it was downloaded>" [--date 2025-10-29]

(or `make product-names SOURCE=licensing.csv ORIGIN=...`). The source is Microsoft's CSV
("Product names and service plan identifiers for licensing", one row per product and service
plan) or the markdown page that publishes the same table (MicrosoftDocs/entra-docs,
docs/identity/users/licensing-service-plan-reference.md). Only the first three columns are kept:
display name, part number (`String_Id`) and skuId (`GUID`), one entry per product.

The CSV's quirks: a UTF-8 BOM (or one read as Latin-1, `ï»¿`), the header `String_ Id` in older
copies, part numbers with trailing spaces, tabs or non-breaking spaces, names with runs of spaces,
and a product repeated on every one of its service plans' rows. A row whose GUID is not a GUID is
refused, not skipped: a table read wrong must not be shipped.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from jobs.product_names import DATA_FILE, Product, name_key

TITLE = "Product names and service plan identifiers for licensing"
DOCS_URL = "https://learn.microsoft.com/en-us/entra/identity/users/licensing-service-plan-reference"
DEFAULT_OUT = Path(__file__).parent / "data" / DATA_FILE

_GUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Everything str.strip() misses that copies of the table carry at the ends of a cell.
_EDGES = " \t\r\n\u00a0\u200b\u200c\u200d\u2060\ufeff"
_MS_DATE_RE = re.compile(r"^ms\.date:\s*(\d{1,2})/(\d{1,2})/(\d{4})\s*$", re.MULTILINE)
_COLUMNS = {"productdisplayname": "name", "stringid": "part", "guid": "guid"}


class SourceError(ValueError):
    """The file is not a copy of Microsoft's table, or a row of it cannot be read."""


def _cell(text: str) -> str:
    """A cell with its ends trimmed (NBSPs, tabs, zero-width characters too) and inner whitespace runs as one space."""
    return " ".join(text.strip(_EDGES).split())


def _part(text: str) -> str:
    """A part number: only its ends trimmed (some have inner spaces: `Microsoft_365_ Business_ Premium_...`)."""
    return text.strip(_EDGES)


def _product(name: str, part: str, guid: str, where: str) -> Product:
    name, part, guid = _cell(name), _part(part), guid.strip(_EDGES)
    if not _GUID_RE.fullmatch(guid):
        raise SourceError(f"{where}: GUID {guid!r} of {name!r} is not a GUID")
    if not name or not part:
        raise SourceError(f"{where}: a product without a display name or part number ({guid})")
    return Product(name, part, guid.lower())


def read_csv(text: str) -> list[Product]:
    """Microsoft's CSV (already decoded) as products, each once, in file order."""
    text = text.removeprefix("\ufeff").removeprefix("ï»¿")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise SourceError("the CSV is empty")
    keys = ["".join(h.strip(_EDGES).split()).replace("_", "").lower() for h in header]
    where = {_COLUMNS[k]: i for i, k in enumerate(keys) if k in _COLUMNS}
    missing = sorted(set(_COLUMNS.values()) - set(where))
    if missing:
        raise SourceError(f"the CSV has no column for {', '.join(missing)} (header: {', '.join(header)}); expected "
                          "Product_Display_Name, String_Id and GUID")
    products = []
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip(_EDGES) for cell in row):
            continue
        if len(row) <= max(where.values()):
            raise SourceError(f"line {line}: {len(row)} cells, fewer than the header's columns")
        products.append(_product(row[where["name"]], row[where["part"]], row[where["guid"]], f"line {line}"))
    return _unique(products)


def read_markdown(text: str) -> list[Product]:
    """The markdown page's product table (`| Product name | String ID | GUID | ... |`) as products."""
    products = []
    in_table = False
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped.startswith("|"):
            in_table = False
            continue
        cells = stripped.strip("|").split("|")
        keys = ["".join(c.split()).lower() for c in cells[:3]]
        if keys[:3] == ["productname", "stringid", "guid"]:
            in_table = True
            continue
        if in_table and len(cells) >= 3 and _GUID_RE.fullmatch(cells[2].strip(_EDGES)):
            products.append(_product(cells[0], cells[1], cells[2], f"line {line_no}"))
    if not products:
        raise SourceError("no product table found (a header row `| Product name | String ID | GUID |`)")
    return _unique(products)


def _unique(products: Iterable[Product]) -> list[Product]:
    """Each product once (the CSV repeats it on every service plan's row)."""
    return list(dict.fromkeys(products))


def markdown_date(text: str) -> str | None:
    """The page's `ms.date` (MM/DD/YYYY in its front matter) as an ISO date, if it has one."""
    match = _MS_DATE_RE.search(text)
    if match is None:
        return None
    month, day, year = (int(g) for g in match.groups())
    return date(year, month, day).isoformat()


def decode(raw: bytes) -> str:
    """The file's text: UTF-8 (BOM or not), or UTF-16 with a BOM."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"the file is not UTF-8 text ({exc})") from None


def read_source(text: str) -> tuple[str, list[Product]]:
    """('csv' or 'markdown', the products) for a copy of the table in either form."""
    first = next((line.strip() for line in text.removeprefix("\ufeff").splitlines() if line.strip()), "")
    if first.startswith(("---", "#", "|")):
        return "markdown", read_markdown(text)
    return "csv", read_csv(text)


def build(products: Sequence[Product], *, origin: str, source_date: str, form: str,
          refreshed: str | None = None) -> dict[str, Any]:
    """The data file's content: where the table came from, and the products sorted by name."""
    names: dict[str, set[str]] = {}
    for product in products:
        names.setdefault(name_key(product.name), set()).add(product.sku_id)
    ordered = sorted(products, key=lambda p: (name_key(p.name), p.part_number.upper(), p.sku_id))
    return {
        "source": {
            "title": TITLE,
            "publisher": "Microsoft",
            "url": DOCS_URL,
            "read_from": origin,
            "format": form,
            "source_date": source_date,
            "refreshed": refreshed or datetime.now(UTC).date().isoformat(),
            "products": len(ordered),
            "ambiguous_names": sum(1 for ids in names.values() if len(ids) > 1),
        },
        "products": [[p.name, p.part_number, p.sku_id] for p in ordered],
    }


def dumps(data: dict[str, Any]) -> str:
    """The data file's text: the source block readable, one product per line."""
    rows = ",\n".join("    " + json.dumps(row, ensure_ascii=False) for row in data["products"])
    source = json.dumps(data["source"], indent=2, ensure_ascii=False).replace("\n", "\n  ")
    return f'{{\n  "source": {source},\n  "products": [\n{rows}\n  ]\n}}\n'


def main(argv: Sequence[str] | None = None) -> int:
    """Read the source file, write the data file; print what was written."""
    parser = argparse.ArgumentParser(prog="python -m jobs.product_names_source", description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="Microsoft's CSV, or the markdown page, as downloaded")
    parser.add_argument("--origin", required=True,
                        help="where the copy came from (the download URL, or repository, path and commit)")
    parser.add_argument("--date", help="the table's date (YYYY-MM-DD); default: the page's ms.date, else today")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the data file (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        text = decode(args.source.read_bytes())
        form, products = read_source(text)
    except (OSError, SourceError) as exc:
        sys.stderr.write(f"{args.source}: {exc}\n")
        return 1
    source_date = args.date or (markdown_date(text) if form == "markdown" else None)
    if source_date is None:
        source_date = datetime.now(UTC).date().isoformat()
    data = build(products, origin=args.origin, source_date=source_date, form=form)
    args.out.write_text(dumps(data), encoding="utf-8")
    sys.stdout.write(f"{args.out}: {data['source']['products']} products ({data['source']['ambiguous_names']} display "
                     f"names shared by several SKUs), table of {source_date}, read from {args.origin}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
