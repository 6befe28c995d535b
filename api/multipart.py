"""A multipart/form-data submission read as it streams: its one file part spooled, its few short fields kept.

Built on python-multipart's parser (as Starlette's form reader is), with the limits a submission
needs: the whole body within the upload limit (api.bodies), one file part, at most
`MAX_FORM_FIELDS` other fields of at most `MAX_FORM_FIELD_BYTES` each (413 past that), and a
file part under another name than `file` read past, not kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from api.bodies import CLOSE, size_text
from api.errors import ApiError

MAX_FORM_FIELDS = 10
MAX_FORM_FIELD_BYTES = 4 * 1024  # callback_url is at most 2,048 characters
FILE_FIELD = "file"


@dataclass
class Form:
    """What a multipart body held: the `file` part's name (its bytes are in the spool) and the other fields."""

    filename: str | None = None
    has_file: bool = False
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    """The part being read."""

    disposition: bytes = b""
    header_name: bytes = b""
    header_value: bytes = b""
    name: str = ""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


class FormReader:
    """Feeds a multipart body to the parser; the `file` part goes to `spool`, short fields to `form.fields`."""

    def __init__(self, content_type: str, spool: IO[bytes]) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise ApiError(400, "malformed multipart body: the Content-Type names no boundary")
        self.form = Form()
        self._spool = spool
        self._part = _Part()
        self._files = 0
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
            "on_header_field": self._header_field, "on_header_value": self._header_value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_done,
        })

    async def read(self, chunks: AsyncIterator[bytes]) -> Form:
        """Parse the whole body; 400 when it is malformed, 413 for a field too long."""
        try:
            async for chunk in chunks:
                self._parser.write(chunk)
            self._parser.finalize()
        except FormParserError as exc:
            raise ApiError(400, f"malformed multipart body: {exc}") from None
        self._spool.seek(0)
        return self.form

    def _begin(self) -> None:
        self._part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._part.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.header_value += data[start:end]

    def _header_end(self) -> None:
        if self._part.header_name.lower() == b"content-disposition":
            self._part.disposition = self._part.header_value
        self._part.header_name, self._part.header_value = b"", b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._part.disposition)
        if b"name" not in options:
            raise ApiError(400, 'malformed multipart body: a part has no Content-Disposition "name"')
        part = self._part
        part.name = options[b"name"].decode("utf-8", "replace")
        part.is_file = b"filename" in options
        if part.is_file:
            self._files += 1
            if self._files > 1:
                raise ApiError(400, "malformed multipart body: more than one file part; send one file, named"
                                    f" '{FILE_FIELD}'")
            if part.name == FILE_FIELD:
                self.form.has_file = True
                self.form.filename = options[b"filename"].decode("utf-8", "replace")
        elif len(self.form.fields) >= MAX_FORM_FIELDS:
            raise ApiError(400, f"malformed multipart body: more than {MAX_FORM_FIELDS} fields")

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.is_file:
            if part.name == FILE_FIELD:  # a file under another name is read past, not kept
                self._spool.write(data[start:end])
            return
        if len(part.data) + end - start > MAX_FORM_FIELD_BYTES:
            shown = part.name[:40]
            raise ApiError(413, f"the form field '{shown}' is longer than {size_text(MAX_FORM_FIELD_BYTES)}, the"
                                " limit for a form field", headers=CLOSE)
        part.data += data[start:end]

    def _end(self) -> None:
        part = self._part
        if not part.is_file:
            self.form.fields[part.name] = part.data.decode("utf-8", "replace")
