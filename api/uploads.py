"""Reads a submission's body: JSON in memory, a CSV (`text/csv` or multipart field `file`) as byte chunks.

Either way the upload's SHA-256 is taken as its bytes go by (for the audit trail and idempotency),
and its file name is the multipart part's `filename` or, for a bare body, the `filename` parameter of
a `Content-Disposition` header.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import Message
from enum import StrEnum
from typing import IO

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from api.errors import ApiError
from jobs.models import FieldError

READ_CHUNK_BYTES = 64 * 1024
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024  # a CSV body beyond this goes to a temporary file
MULTIPART_OVERHEAD_BYTES = 1024 * 1024  # room for a multipart body's boundaries and part headers
MAX_FILENAME_CHARS = 255


class UploadKind(StrEnum):
    """The body formats a submission can come in."""

    JSON = "json"
    CSV = "csv"
    MULTIPART = "multipart"


MEDIA_KINDS = {
    "application/json": UploadKind.JSON,
    "text/csv": UploadKind.CSV,
    "text/plain": UploadKind.CSV,
    "application/csv": UploadKind.CSV,
    "multipart/form-data": UploadKind.MULTIPART,
}


def upload_kind(request: Request) -> UploadKind:
    """The body format from the Content-Type; 415 for any other."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in MEDIA_KINDS:
        raise ApiError(415, "send text/csv, multipart/form-data (field 'file') or application/json"
                            f" (got '{media or 'none'}')")
    return MEDIA_KINDS[media]


class DigestedChunks(Iterator[bytes]):
    """An upload's byte chunks, hashed (SHA-256) as they are read."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._sha256 = hashlib.sha256()

    def __next__(self) -> bytes:
        chunk = next(self._chunks)
        self._sha256.update(chunk)
        return chunk

    def hexdigest(self) -> str:
        """The SHA-256 of the whole upload, reading whatever the consumer left unread."""
        for _ in self:
            pass
        return self._sha256.hexdigest()


@dataclass(frozen=True)
class JsonUpload:
    """A JSON body, its SHA-256 and the file name it came with."""

    body: bytes
    sha256: str
    filename: str | None


@dataclass(frozen=True)
class CsvUpload:
    """A CSV upload being read, the file name it came with, and a multipart form's `callback_url` field."""

    chunks: DigestedChunks
    filename: str | None
    callback_url: str | None = None


async def read_json(request: Request, limit_bytes: int) -> JsonUpload:
    """The whole JSON body; 413 as soon as it is known to exceed the limit."""
    _refuse_declared_size(request, UploadKind.JSON, limit_bytes)
    body = bytearray()
    sha256 = hashlib.sha256()
    async for part in request.stream():
        body += part
        sha256.update(part)
        if len(body) > limit_bytes:
            raise _too_big(UploadKind.JSON, limit_bytes)
    return JsonUpload(bytes(body), sha256.hexdigest(), _disposition_filename(request))


@asynccontextmanager
async def csv_upload(request: Request, limit_bytes: int) -> AsyncIterator[CsvUpload]:
    """The CSV upload as byte chunks, from a temporary spool or the multipart file; both closed on exit."""
    _refuse_declared_size(request, UploadKind.CSV, limit_bytes, slack_bytes=MULTIPART_OVERHEAD_BYTES)
    if upload_kind(request) is UploadKind.MULTIPART:
        form = await _read_form(request, limit_bytes)
        try:
            part = _form_file(form.get("file"))
            callback = form.get("callback_url")
            yield CsvUpload(DigestedChunks(_chunks(part.file)), _clean_filename(part.filename),
                            callback if isinstance(callback, str) and callback else None)
        finally:
            await form.close()
    else:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
            await _spool(request, spool, limit_bytes)
            yield CsvUpload(DigestedChunks(_chunks(spool)), _disposition_filename(request))


def _disposition_filename(request: Request) -> str | None:
    """The `filename` (or RFC 2231 `filename*`) of a `Content-Disposition` request header."""
    header = request.headers.get("content-disposition")
    if not header:
        return None
    message = Message()
    message["content-disposition"] = header
    return _clean_filename(message.get_filename())


def _clean_filename(name: str | None) -> str | None:
    """A client's file name as recorded: its last path part, printable, bounded; None when empty."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(ch for ch in base if ch.isprintable()).strip()
    return printable[:MAX_FILENAME_CHARS] or None


def _refuse_declared_size(request: Request, kind: UploadKind, limit_bytes: int, slack_bytes: int = 0) -> None:
    """413 before reading anything when the Content-Length already exceeds the limit (plus framing slack)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit_bytes + slack_bytes:
        raise _too_big(kind, limit_bytes)


def _too_big(kind: UploadKind, limit_bytes: int) -> ApiError:
    """The 413 refusal, worded as the parser words the same refusal."""
    if kind is UploadKind.JSON:
        message = f"the JSON body is more than the limit of {_size(limit_bytes)} per request"
    else:
        message = f"the upload is larger than {_size(limit_bytes)}, the limit per request"
    return ApiError(413, f"{message}; split it into several jobs")


async def _read_form(request: Request, limit_bytes: int) -> FormData:
    try:
        return await request.form(max_files=1, max_fields=10, max_part_size=limit_bytes)
    except Exception as exc:  # malformed multipart bodies
        raise ApiError(400, f"malformed multipart body: {exc}") from exc


def _form_file(field: UploadFile | str | None) -> UploadFile:
    if not isinstance(field, UploadFile):
        raise ApiError(422, "multipart upload needs a file field named 'file'", [FieldError("missing", column="file")])
    field.file.seek(0)
    return field


async def _spool(request: Request, spool: IO[bytes], limit_bytes: int) -> None:
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit_bytes:
            raise _too_big(UploadKind.CSV, limit_bytes)
        spool.write(part)
    spool.seek(0)


def _chunks(source: IO[bytes]) -> Iterator[bytes]:
    return iter(lambda: source.read(READ_CHUNK_BYTES), b"")


def _size(n_bytes: int) -> str:
    """A byte count for people: whole GB, MB or KB when exact."""
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n_bytes >= factor and n_bytes % factor == 0:
            return f"{n_bytes // factor} {unit}"
    return f"{n_bytes:,} bytes"
