"""The API's error body (`detail`, `errors`, `total_errors`) and the exception handlers that write it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from jobs.catalogs import CatalogUnavailable
from jobs.models import FieldError, InputRejected
from jobs.submit import NotRunnable, SeatShortage


class ApiError(Exception):
    """A request the API refuses itself, before any parsing: answered with the error body."""

    def __init__(self, status_code: int, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.errors = tuple(errors)


def error_response(
    status_code: int, detail: str, errors: Sequence[FieldError] = (), total_errors: int = 0
) -> JSONResponse:
    """The error body; with no field errors given, the detail is the one error."""
    items = [e.to_json() for e in errors or [FieldError(detail)]]
    return JSONResponse(status_code=status_code,
                        content={"detail": detail, "errors": items, "total_errors": total_errors or len(items)})


async def _refused(_: Request, exc: ApiError) -> Response:
    return error_response(exc.status_code, exc.detail, exc.errors)


async def _rejected(_: Request, exc: InputRejected) -> Response:
    return error_response(exc.status_code, exc.summary(), exc.errors, exc.total_errors)


async def _invalid(_: Request, exc: RequestValidationError) -> Response:
    errors = [
        FieldError(message=str(e.get("msg")), column=".".join(str(p) for p in e.get("loc", ())))
        for e in exc.errors()
    ]
    return error_response(422, "invalid request", errors)


async def _no_catalog(_: Request, exc: CatalogUnavailable) -> Response:
    return error_response(503, str(exc))


async def _short(_: Request, exc: SeatShortage) -> Response:
    body = {"detail": str(exc), "errors": [FieldError(str(exc)).to_json()], "total_errors": 1,
            "seats": [line.to_json() for line in exc.lines]}
    return JSONResponse(status_code=409, content=body)


async def _not_runnable(_: Request, exc: NotRunnable) -> Response:
    return error_response(409, str(exc))


def exception_handlers() -> dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]]:
    """The handlers that answer refusals with the error body."""
    return {
        ApiError: _refused,
        InputRejected: _rejected,
        RequestValidationError: _invalid,
        CatalogUnavailable: _no_catalog,
        SeatShortage: _short,
        NotRunnable: _not_runnable,
    }
