"""An uploaded CSV's bytes as text: UTF-8 (with or without BOM) or UTF-16 with a BOM; oversized, binary and
wrongly encoded files refused with what to do instead."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

from jobs.input.errors import Fatal
from jobs.input.rules import size_text
from jobs.models import FieldError

_SAVE_AS = 'save the file as "CSV UTF-8" (Excel: File > Save As > CSV UTF-8)'
_SNIFF_BYTES = 4  # enough for any byte-order mark


class CsvText:
    """The chunks decoded (BOM dropped), with size, NUL and encoding checks; iterate once.

    `encoding` names what was found once iteration has started: "UTF-8", "UTF-8 with BOM",
    "UTF-16 LE with BOM" or "UTF-16 BE with BOM". UTF-16 without a BOM and UTF-32 are refused:
    without a BOM, UTF-16's byte order is a guess.
    """

    def __init__(self, chunks: Iterable[bytes], max_bytes: int) -> None:
        self._chunks = chunks
        self._max_bytes = max_bytes
        self._decoder: codecs.IncrementalDecoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._wide = False  # UTF-16: NULs are checked in the text, not the bytes
        self._offset = 0  # bytes decoded so far
        self._newlines = 0  # line feeds in them
        self.encoding = "UTF-8"

    def __iter__(self) -> Iterator[str]:
        chunks = self._sized()
        head = b""
        for chunk in chunks:
            head += chunk
            if len(head) >= _SNIFF_BYTES:
                break
        if not head:
            return
        bom = self._choose(head)
        self._offset = bom
        text = self._decode(head[bom:])
        if text:
            yield text
        for chunk in chunks:
            text = self._decode(chunk)
            if text:
                yield text
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            at = self._offset - len(exc.object) + exc.start
            raise Fatal(self._bad_bytes(exc.object[exc.start], at, self._newlines + 1)) from None

    def _sized(self) -> Iterator[bytes]:
        """The non-empty chunks; a file past the upload limit is fatal (413)."""
        seen = 0
        for chunk in self._chunks:
            if not chunk:
                continue
            seen += len(chunk)
            if seen > self._max_bytes:
                raise Fatal(
                    FieldError(
                        f"the file is larger than {size_text(self._max_bytes)}, the upload limit; split it into "
                        "several jobs"
                    ),
                    413,
                )
            yield chunk

    def _choose(self, head: bytes) -> int:
        """Pick the decoder from the first bytes; the length of the byte-order mark to skip."""
        _refuse_wrong_files(head)
        if head.startswith(codecs.BOM_UTF8):
            self.encoding = "UTF-8 with BOM"
            return len(codecs.BOM_UTF8)
        for bom, codec, name in ((codecs.BOM_UTF16_LE, "utf-16-le", "LE"), (codecs.BOM_UTF16_BE, "utf-16-be", "BE")):
            if head.startswith(bom):
                self._decoder = codecs.getincrementaldecoder(codec)("strict")
                self._wide = True
                self.encoding = f"UTF-16 {name} with BOM"
                return len(bom)
        return 0

    def _decode(self, chunk: bytes) -> str:
        """One chunk as text; a NUL or an invalid byte sequence (whichever comes first) is fatal."""
        if self._wide:
            return self._decode_wide(chunk)
        pending = len(self._decoder.getstate()[0])  # bytes of a character split across chunks
        nul = chunk.find(b"\0")
        try:
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            bad = exc.start - pending
            if nul < 0 or bad < nul:
                line = self._newlines + 1 + chunk[: max(bad, 0)].count(b"\n")
                raise Fatal(self._bad_bytes(exc.object[exc.start], self._offset + bad, line)) from None
            text = ""
        if nul >= 0:
            line = self._newlines + 1 + chunk[:nul].count(b"\n")
            raise Fatal(_nul(self._offset + nul, line))
        self._newlines += chunk.count(b"\n")
        self._offset += len(chunk)
        return text

    def _decode_wide(self, chunk: bytes) -> str:
        """A UTF-16 chunk as text; offsets are bytes, lines counted in the text."""
        try:
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise Fatal(
                FieldError(
                    f"the file is not valid {self.encoding.removesuffix(' with BOM')} text near byte offset "
                    f"{self._offset + max(exc.start, 0):,} (line {self._newlines + 1}): {exc.reason}; {_SAVE_AS}",
                    row=self._newlines + 1,
                )
            ) from None
        nul = text.find("\0")
        if nul >= 0:
            line = self._newlines + 1 + text.count("\n", 0, nul)
            raise Fatal(_nul(self._offset + 2 * nul, line))
        self._newlines += text.count("\n")
        self._offset += len(chunk)
        return text

    def _bad_bytes(self, byte: int, offset: int, line: int) -> FieldError:
        return FieldError(
            f"the file is not UTF-8 text: byte 0x{byte:02X} at byte offset {offset:,} (line {line}) is not "
            f"valid UTF-8; {_SAVE_AS}",
            row=line,
        )


def _nul(offset: int, line: int) -> FieldError:
    return FieldError(
        f"the file contains a NUL byte (byte offset {offset:,}, line {line}), so it is "
        'binary, not CSV text; export it from your spreadsheet as "CSV UTF-8"',
        row=line,
    )


def _refuse_wrong_files(first: bytes) -> None:
    """Name the usual wrong files (workbooks, UTF-32, UTF-16 without a BOM) before byte-level errors do."""
    if first.startswith(b"PK\x03\x04"):
        raise Fatal(
            FieldError(
                "the file is an Excel workbook or another ZIP archive, not CSV text; in Excel use "
                'File > Save As > "CSV UTF-8"',
                row=1,
            )
        )
    if first.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise Fatal(FieldError(f"the file is UTF-32 text, which is not read; {_SAVE_AS}", row=1))
    if len(first) >= 4 and ((first[1] == 0 and first[3] == 0 and first[0] and first[2])
                            or (first[0] == 0 and first[2] == 0 and first[1] and first[3])):
        raise Fatal(
            FieldError(
                f"the file looks like UTF-16 text without a byte-order mark (BOM), so its byte order is unknown; "
                f'{_SAVE_AS}, or as "Unicode text" with its BOM',
                row=1,
            )
        )
