"""Microsoft's product names: display name → skuId and part number, from the table shipped with the package.

The table is Microsoft's "Product names and service plan identifiers for licensing" (one row per
product: `Product_Display_Name`, `String_Id`, `GUID`), reduced by jobs.product_names_source to
`jobs/data/product_names.json`, which records where and when it was read. Admin center exports
and usage reports name licenses this way ("Microsoft 365 E3"), not by part number.

Display names are not unique in Microsoft's table (one name for an EEA and a worldwide SKU, a
legacy and a current one): a name lists every candidate, and the tenant's subscribed SKUs decide.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

DATA_FILE = "product_names.json"

# Copy-pasted names carry NBSPs, tabs, zero-width spaces and BOMs; Microsoft's table mixes dashes.
_DROPPED = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"), None)
_DASHES = str.maketrans({"\u2013": "-", "\u2014": "-", "\u2212": "-"})


@dataclass(frozen=True)
class Product:
    """One row of Microsoft's table: a product's display name, part number (`String_Id`) and skuId (`GUID`)."""

    name: str
    part_number: str
    sku_id: str


def name_key(text: str) -> str:
    """A display name reduced for matching: invisible characters and whitespace gone, dashes alike, upper-cased."""
    return "".join(text.translate(_DROPPED).translate(_DASHES).split()).upper()


class ProductNames:
    """Microsoft's products indexed by display name and by skuId."""

    def __init__(self, products: Iterable[Product], source: Mapping[str, Any] | None = None) -> None:
        self.products = tuple(products)
        self.source: dict[str, Any] = dict(source or {})
        by_name: dict[str, list[Product]] = {}
        by_id: dict[str, list[Product]] = {}
        for product in self.products:
            by_name.setdefault(name_key(product.name), []).append(product)
            by_id.setdefault(product.sku_id.lower(), []).append(product)
        self._by_name = {k: tuple(v) for k, v in by_name.items()}
        self._by_id = {k: tuple(v) for k, v in by_id.items()}

    def named(self, text: str) -> tuple[Product, ...]:
        """Every product whose display name is `text` (ignoring case, spacing and dash kind); empty if none."""
        return self._by_name.get(name_key(text), ())

    def names_of(self, sku_id: str) -> tuple[str, ...]:
        """The display names Microsoft gives a skuId (usually one)."""
        return tuple(dict.fromkeys(p.name for p in self._by_id.get(sku_id.lower(), ())))

    def is_name(self, text: str) -> bool:
        """Whether `text` is one of Microsoft's display names."""
        return name_key(text) in self._by_name

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProductNames:
        """From the data file's shape: `{"source": {...}, "products": [[name, part_number, skuId], ...]}`."""
        return cls((Product(str(n), str(p), str(g).lower()) for n, p, g in data["products"]), data.get("source"))


@cache
def shipped() -> ProductNames:
    """The table shipped with the package (read once)."""
    text = (resources.files("jobs") / "data" / DATA_FILE).read_text(encoding="utf-8")
    return ProductNames.from_json(json.loads(text))


NO_PRODUCT_NAMES = ProductNames(())
