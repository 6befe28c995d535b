"""An uploaded CSV's bytes as UTF-8 text, refusing oversized, binary and wrongly encoded files."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

from jobs.input.errors import Fatal
from jobs.input.rules import size_text
from jobs.models import FieldError


class Utf8Text:
    """The chunks decoded as UTF-8 (BOM dropped), with size, NUL and encoding checks; iterate once."""

    def __init__(self, chunks: Iterable[bytes], max_bytes: int) -> None:
        self._chunks = chunks
        self._max_bytes = max_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._offset = 0  # bytes decoded so far
        self._newlines = 0  # line feeds in them

    def __iter__(self) -> Iterator[str]:
        at_start = True
        for chunk in self._chunks:
            if not chunk:
                continue
            if self._offset + len(chunk) > self._max_bytes:
                raise Fatal(
                    FieldError(
                        f"the file is larger than {size_text(self._max_bytes)}, the upload limit; split it into "
                        "several jobs"
                    ),
                    413,
                )
            if at_start:
                _sniff(chunk)
            text = self._decode(chunk)
            if at_start and text:
                at_start = False
                text = text.removeprefix("\ufeff")
            if text:
                yield text
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            at = self._offset - len(exc.object) + exc.start
            raise Fatal(_not_utf8(exc.object[exc.start], at, self._newlines + 1)) from None

    def _decode(self, chunk: bytes) -> str:
        """One chunk as text; a NUL byte or invalid UTF-8 (whichever comes first) is fatal."""
        pending = len(self._decoder.getstate()[0])  # bytes of a character split across chunks
        nul = chunk.find(b"\0")
        try:
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            bad = exc.start - pending
            if nul < 0 or bad < nul:
                line = self._newlines + 1 + chunk[: max(bad, 0)].count(b"\n")
                raise Fatal(_not_utf8(exc.object[exc.start], self._offset + bad, line)) from None
            text = ""
        if nul >= 0:
            line = self._newlines + 1 + chunk[:nul].count(b"\n")
            raise Fatal(
                FieldError(
                    f"the file contains a NUL byte (byte offset {self._offset + nul:,}, line {line}), so it is "
                    'binary, not CSV text; export it from your spreadsheet as "CSV UTF-8"',
                    row=line,
                )
            )
        self._newlines += chunk.count(b"\n")
        self._offset += len(chunk)
        return text


def _not_utf8(byte: int, offset: int, line: int) -> FieldError:
    return FieldError(
        f"the file is not UTF-8 text: byte 0x{byte:02X} at byte offset {offset:,} (line {line}) is not "
        'valid UTF-8; save the file as "CSV UTF-8" (Excel: File > Save As > CSV UTF-8)',
        row=line,
    )


def _sniff(first: bytes) -> None:
    """Name the usual wrong files (workbooks, UTF-16 exports) before byte-level errors do."""
    if first.startswith(b"PK\x03\x04"):
        raise Fatal(
            FieldError(
                "the file is an Excel workbook or another ZIP archive, not CSV text; in Excel use "
                'File > Save As > "CSV UTF-8"',
                row=1,
            )
        )
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise Fatal(FieldError('the file is UTF-16 ("Unicode text"), not UTF-8; save it as "CSV UTF-8"', row=1))
