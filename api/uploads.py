"""Reads a submission's body: JSON in memory, a CSV (`text/csv` or multipart field `file`) as byte chunks.

Either way the body arrives through api.bodies (one size limit, a deadline), the upload's SHA-256
is taken as its bytes go by (for the audit trail and idempotency), and its file name is the
multipart part's `filename` or, for a bare body, the `filename` parameter of a
`Content-Disposition` header.
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

from api.bodies import BodyPace, BodyStream, size_text
from api.errors import ApiError
from api.multipart import FILE_FIELD, FormReader
from jobs.models import FieldError

READ_CHUNK_BYTES = 64 * 1024
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024  # a CSV body beyond this goes to a temporary file
MULTIPART_OVERHEAD_BYTES = 64 * 1024  # room for a multipart body's boundaries, part headers and short fields
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


async def read_json(request: Request, limit_bytes: int, pace: BodyPace) -> JsonUpload:
    """The whole JSON body; 413 as soon as it is known to exceed the limit, 408 when it comes too slowly."""
    parts: list[bytes] = []
    sha256 = hashlib.sha256()
    async for part in _body(request, UploadKind.JSON, limit_bytes, pace).chunks():
        parts.append(part)
        sha256.update(part)
    return JsonUpload(b"".join(parts), sha256.hexdigest(), _disposition_filename(request))


@asynccontextmanager
async def csv_upload(request: Request, limit_bytes: int, pace: BodyPace) -> AsyncIterator[CsvUpload]:
    """The CSV upload as byte chunks, from a temporary spool (the bare body, or the multipart file); closed on exit.

    Nothing is spooled past the limit: the body is refused (413) as soon as it passes it.
    """
    kind = upload_kind(request)
    body = _body(request, kind, limit_bytes, pace)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
        if kind is UploadKind.MULTIPART:
            form = await FormReader(request.headers.get("content-type", ""), spool).read(body.chunks())
            if not form.has_file:
                raise ApiError(422, f"multipart upload needs a file field named '{FILE_FIELD}'",
                               [FieldError("missing", column=FILE_FIELD)])
            callback = form.fields.get("callback_url")
            yield CsvUpload(DigestedChunks(_chunks(spool)), _clean_filename(form.filename), callback or None)
        else:
            async for part in body.chunks():
                spool.write(part)
            spool.seek(0)
            yield CsvUpload(DigestedChunks(_chunks(spool)), _disposition_filename(request))


def _body(request: Request, kind: UploadKind, limit_bytes: int, pace: BodyPace) -> BodyStream:
    """The request's body within the limit for its kind (a multipart one with room for its framing)."""
    if kind is UploadKind.JSON:
        refusal = f"the JSON body is more than the limit of {size_text(limit_bytes)} per request"
    else:
        refusal = f"the upload is larger than {size_text(limit_bytes)}, the limit per request"
    slack = MULTIPART_OVERHEAD_BYTES if kind is UploadKind.MULTIPART else 0
    return BodyStream(request, limit_bytes, pace, what="the JSON body" if kind is UploadKind.JSON else "the upload",
                      refusal=f"{refusal}; split it into several jobs", slack_bytes=slack)


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


def _chunks(source: IO[bytes]) -> Iterator[bytes]:
    return iter(lambda: source.read(READ_CHUNK_BYTES), b"")
