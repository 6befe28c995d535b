"""The API's error body (`detail`, `errors`, `total_errors`) and the exception handlers that write it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import redis
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from kombu.exceptions import OperationalError as BrokerUnreachable

from jobs.catalogs import CatalogUnavailable
from jobs.models import FieldError, InputRejected
from jobs.quotas import QuotaExceeded
from jobs.store import ReplicaLagging
from jobs.submit import NotRunnable, SeatShortage
from webhooks.policy import CallbackCheckBusy

log = logging.getLogger(__name__)

OUTAGE_RETRY_AFTER_S = 5
CALLBACK_BUSY_RETRY_AFTER_S = 2
# Redis or the broker not answering is an outage, not a bug in the request: 503 and try again.
OUTAGES: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, BrokerUnreachable, ReplicaLagging)


class ApiError(Exception):
    """A request the API refuses itself, before any parsing: answered with the error body."""

    def __init__(self, status_code: int, detail: str, errors: Sequence[FieldError] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.errors = tuple(errors)
        self.headers = headers or {}


def error_response(
    status_code: int, detail: str, errors: Sequence[FieldError] = (), total_errors: int = 0
) -> JSONResponse:
    """The error body; with no field errors given, the detail is the one error."""
    items = [e.to_json() for e in errors or [FieldError(detail)]]
    return JSONResponse(status_code=status_code,
                        content={"detail": detail, "errors": items, "total_errors": total_errors or len(items)})


async def _refused(_: Request, exc: ApiError) -> Response:
    response = error_response(exc.status_code, exc.detail, exc.errors)
    response.headers.update(exc.headers)
    return response


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


async def _over_quota(_: Request, exc: QuotaExceeded) -> Response:
    body = {"detail": str(exc), "errors": [FieldError(str(exc)).to_json()], "total_errors": 1, **exc.use.to_json()}
    return JSONResponse(status_code=429, content=body, headers={"Retry-After": str(exc.retry_after_s)})


async def _callbacks_busy(_: Request, exc: CallbackCheckBusy) -> Response:
    response = error_response(503, f"callback URLs cannot be checked now ({exc}); retry in a few seconds",
                              [FieldError("cannot be checked now", column="callback_url")])
    response.headers["Retry-After"] = str(CALLBACK_BUSY_RETRY_AFTER_S)
    return response


async def _outage(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: the job store or the broker is unreachable: %s", request.method, request.url.path, exc)
    response = error_response(503, "the job store or the broker is unreachable; retry in a few seconds")
    response.headers["Retry-After"] = str(OUTAGE_RETRY_AFTER_S)
    return response


def exception_handlers() -> dict[int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]]:
    """The handlers that answer refusals and outages with the error body."""
    return {
        ApiError: _refused,
        InputRejected: _rejected,
        RequestValidationError: _invalid,
        CatalogUnavailable: _no_catalog,
        SeatShortage: _short,
        NotRunnable: _not_runnable,
        QuotaExceeded: _over_quota,
        CallbackCheckBusy: _callbacks_busy,
        **dict.fromkeys(OUTAGES, _outage),
    }
