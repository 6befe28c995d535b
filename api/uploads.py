"""Reads a submission's body: JSON in memory, a CSV (`text/csv` or multipart field `file`) as byte chunks."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import IO

from fastapi import Request
from starlette.datastructures import FormData, UploadFile

from api.errors import ApiError
from jobs.models import FieldError

READ_CHUNK_BYTES = 64 * 1024
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024  # a CSV body beyond this goes to a temporary file
MULTIPART_OVERHEAD_BYTES = 1024 * 1024  # room for a multipart body's boundaries and part headers


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


async def read_json(request: Request, limit_bytes: int) -> bytes:
    """The whole JSON body; 413 as soon as it is known to exceed the limit."""
    _refuse_declared_size(request, UploadKind.JSON, limit_bytes)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit_bytes:
            raise _too_big(UploadKind.JSON, limit_bytes)
    return bytes(body)


@asynccontextmanager
async def csv_chunks(request: Request, limit_bytes: int) -> AsyncIterator[Iterator[bytes]]:
    """The CSV upload as byte chunks, from a temporary spool or the multipart file; both closed on exit."""
    _refuse_declared_size(request, UploadKind.CSV, limit_bytes, slack_bytes=MULTIPART_OVERHEAD_BYTES)
    if upload_kind(request) is UploadKind.MULTIPART:
        form = await _read_form(request, limit_bytes)
        try:
            yield _chunks(_form_file(form.get("file")).file)
        finally:
            await form.close()
    else:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES) as spool:
            await _spool(request, spool, limit_bytes)
            yield _chunks(spool)


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
