"""Graph's wire shapes shared by every route: the request and reply records and the error envelope."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from graphsim.tokens import AppToken

GRAPH_JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
MAX_PAGE_SIZE = 999
DEFAULT_PAGE_SIZE = 100

NOT_FOUND_MESSAGE = "Resource '{}' does not exist or one of its queried reference-property objects are not present."
DENIED_MESSAGE = "Insufficient privileges to complete the operation."


class _Absent:
    """Marker for a request without a body."""


class _Unparseable:
    """Marker for a body that is not valid JSON."""


NO_BODY = _Absent()
BAD_JSON = _Unparseable()


@dataclass(frozen=True)
class Reply:
    """One Graph response before serialisation: status, headers and a JSON-ready body."""

    status: int
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    endpoint: str = "other"
    # The user segment of the path, for the write log.
    user: str | None = None
    # The group segment of the path, for the write log.
    group: str | None = None


@dataclass(frozen=True)
class Call:
    """One Graph request (direct or a $batch item) after authentication."""

    method: str
    version: str
    path: str
    query: dict[str, list[str]]
    body: Any
    app: AppToken
    request_id: str
    client_request_id: str


def inner_date() -> str:
    """innerError.date as Graph writes it (UTC, no offset)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def error_body(code: str, message: str, request_id: str, client_request_id: str,
               inner: dict[str, str] | None = None) -> dict[str, Any]:
    """Graph's error envelope: {"error": {code, message, innerError: {date, request-id, ...}}}."""
    return {"error": {"code": code, "message": message,
                      "innerError": {**(inner or {}), "date": inner_date(), "request-id": request_id,
                                     "client-request-id": client_request_id}}}


def error_reply(call: Call, status: int, code: str, message: str, endpoint: str, *, user: str | None = None,
                group: str | None = None) -> Reply:
    """An error reply to `call` in Graph's envelope."""
    return Reply(status, error_body(code, message, call.request_id, call.client_request_id), (), endpoint, user,
                 group)


def bad_request(call: Call, message: str, endpoint: str, *, user: str | None = None,
                group: str | None = None) -> Reply:
    """400 Request_BadRequest, the code every directory validation failure observed so far carries."""
    return error_reply(call, 400, "Request_BadRequest", message, endpoint, user=user, group=group)


def denied(call: Call, endpoint: str, *, user: str | None = None, group: str | None = None) -> Reply:
    """403 Authorization_RequestDenied: the token lacks every role that allows the call."""
    return error_reply(call, 403, "Authorization_RequestDenied", DENIED_MESSAGE, endpoint, user=user, group=group)


def not_found(call: Call, key: str, endpoint: str, *, user: str | None = None, group: str | None = None) -> Reply:
    """404 Request_ResourceNotFound naming the object Graph could not find."""
    return error_reply(call, 404, "Request_ResourceNotFound", NOT_FOUND_MESSAGE.format(key), endpoint, user=user,
                       group=group)


def bad_json(call: Call, endpoint: str, *, user: str | None = None, group: str | None = None) -> Reply:
    """400 for a body that is not the JSON the operation reads."""
    return error_reply(call, 400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type "
                       "header is set and payload is of valid JSON format.", endpoint, user=user, group=group)


def parse_json_body(raw: bytes) -> Any:
    """The parsed body, NO_BODY when empty, BAD_JSON when it does not parse."""
    if not raw.strip():
        return NO_BODY
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return BAD_JSON


def encode_skiptoken(offset: int) -> str:
    """The opaque `$skiptoken` of a page starting at `offset`."""
    return base64.urlsafe_b64encode(f"graphsim:{offset}".encode()).decode()


def decode_skiptoken(token: str) -> int:
    """The offset a `$skiptoken` stands for; ValueError when it is not one of ours."""
    return int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("graphsim:"))
