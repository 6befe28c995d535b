"""Corpus inputs too large to commit, generated as streams of byte chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

CHUNK_BYTES = 1 << 20


def ten_mb_cell() -> Iterator[bytes]:
    """One data row whose EmployeeId cell is 10 MB long."""
    yield b"user,add,EmployeeId\r\nada@contoso.com,ENTERPRISEPACK,"
    block = b"x" * CHUNK_BYTES
    for _ in range(10):
        yield block
    yield b"\r\n"


def two_million_rows() -> Iterator[bytes]:
    """2,000,000 valid data rows: twice the default row limit."""
    yield b"user,add,usage_location\n"
    for start in range(0, 2_000_000, 10_000):
        yield b"".join(b"user%d@contoso.com,ENTERPRISEPACK,US\n" % i for i in range(start, start + 10_000))


def oversized_csv() -> Iterator[bytes]:
    """A valid row followed by blank lines, 1 MB past the default 512 MB upload limit."""
    yield b"user,add\nada@contoso.com,ENTERPRISEPACK\n"
    block = b"\n" * CHUNK_BYTES
    for _ in range(513):
        yield block


def deep_json() -> Iterator[bytes]:
    """100,000 nested JSON arrays."""
    yield b'{"tenant": "sim", "operations": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def oversized_json() -> Iterator[bytes]:
    """A JSON body 1 MB past the default 64 MB limit (valid JSON padded with spaces)."""
    yield b'{"tenant": "sim", "operations": ['
    block = b" " * CHUNK_BYTES
    for _ in range(65):
        yield block
    yield b'{"user": "ada@contoso.com", "addLicenses": [{"sku": "ENTERPRISEPACK"}]}]}'


GENERATORS: dict[str, Callable[[], Iterator[bytes]]] = {
    "ten_mb_cell": ten_mb_cell,
    "two_million_rows": two_million_rows,
    "oversized_csv": oversized_csv,
    "deep_json": deep_json,
    "oversized_json": oversized_json,
}
