"""The Microsoft Graph client: one attempt per call, errors translated once, throttle consulted always.

Retries are not done here but by the caller through `graphclient.retry.RetryPolicy`, so they are never
stacked. Every request passes `Throttle.acquire` first and every response (and every `$batch`
item) is reported to `Throttle.observe`, so throttling is governed in one place across workers.
Every request also asks the tenant's circuit breaker (`Breaker.admit`) before it is sent and tells
it whether Graph answered (`Breaker.record`), so an unreachable Graph stops every worker's calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from graphclient.breaker import ALWAYS_CLOSED, Admission, Breaker
from graphclient.errors import (
    GraphAuthError,
    GraphError,
    GraphPermanentError,
    GraphThrottled,
    GraphTransientError,
)
from graphclient.headers import header, parse_retry_after
from graphclient.throttle import Throttle

log = logging.getLogger(__name__)

API_VERSION = "v1.0"
MAX_BATCH = 20
MAX_PAGE_SIZE = 999  # `$top` of GET /users
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# Headers of a 429 that say which limit refused it (write count or resource units).
THROTTLE_DETAIL_HEADERS = ("x-ms-throttle-information", "x-ms-throttle-scope")
_MAX_MESSAGE_CHARS = 500
# Legacy Azure AD Graph throttle: 503 "Please try after {0} seconds".
_LEGACY_THROTTLE_CODE = "Request_ThrottledTemporarily"
_TRY_AFTER = re.compile(r"try after (\d+(?:\.\d+)?) second", re.IGNORECASE)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def user_path(user: str) -> str:
    """The `/users/...` path segment for an object id or UPN, safely encoded."""
    if user.startswith("$"):
        # Graph reads /users/$x as a system query option; the documented form is /users('$x').
        return "/users('" + quote(user.replace("'", "''"), safe="@") + "')"
    # `#`, `'`, `/`, `?` and `%` all occur in real UPNs and must not reach the URL raw.
    return "/users/" + quote(user, safe="@")


@dataclass(frozen=True)
class BatchRequest:
    """One item of a `$batch` request."""

    id: str
    method: str
    url: str
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_write(self) -> bool:
        """Whether the item counts against the write budget."""
        return self.method.upper() in WRITE_METHODS

    def to_json(self) -> dict[str, Any]:
        """The item as Graph's `$batch` format wants it."""
        item: dict[str, Any] = {"id": self.id, "method": self.method.upper(), "url": self.url}
        headers = dict(self.headers)
        if self.body is not None:
            item["body"] = dict(self.body)
            # Graph requires Content-Type on every item that has a body.
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        if headers:
            item["headers"] = headers
        return item

    @classmethod
    def assign_license(cls, id: str, user: str, add: list[dict[str, Any]], remove: list[str]) -> BatchRequest:
        """An assignLicense item (both keys always sent: Graph rejects a missing one)."""
        return cls(id, "POST", f"{user_path(user)}/assignLicense", _assign_body(add, remove))

    @classmethod
    def update_user(cls, id: str, user: str, fields: Mapping[str, Any]) -> BatchRequest:
        """A PATCH of user properties."""
        return cls(id, "PATCH", user_path(user), dict(fields))

    @classmethod
    def get_user(cls, id: str, user: str, select: Sequence[str]) -> BatchRequest:
        """A GET of a user with `$select`."""
        return cls(id, "GET", f"{user_path(user)}{_select(select)}")


@dataclass(frozen=True)
class GraphAnswer:
    """What Graph answered one request (a `$batch` envelope is method `$batch`; status 0: no answer)."""

    method: str
    status: int
    throttled: bool = False
    retry_after_s: float | None = None


# Told of every answer (for metrics); it must be quick, and its failures never fail a call.
GraphObserver = Callable[[GraphAnswer], None]


@dataclass(frozen=True)
class BatchItemResult:
    """One `$batch` item's response; `error` is set when it failed (same rules as single calls)."""

    id: str
    status: int
    headers: Mapping[str, str]
    body: Any
    error: GraphError | None = None


def _assign_body(add: list[dict[str, Any]], remove: list[str]) -> dict[str, Any]:
    return {"addLicenses": list(add), "removeLicenses": list(remove)}


def _select(select: Sequence[str]) -> str:
    return "?$select=" + ",".join(quote(s, safe="") for s in select) if select else ""


def _error_parts(body: Any) -> tuple[str | None, str | None, str | None]:
    """Graph's error `code`, `message` and `request-id` from an error body, when present."""
    if not isinstance(body, Mapping):
        return None, None, None
    error = body.get("error")
    if not isinstance(error, Mapping):
        return None, None, None
    code = error.get("code")
    message = error.get("message")
    inner = error.get("innerError") or error.get("innererror")
    request_id = inner.get("request-id") if isinstance(inner, Mapping) else None
    return (
        str(code) if code is not None else None,
        str(message)[:_MAX_MESSAGE_CHARS] if message is not None else None,
        str(request_id) if request_id is not None else None,
    )


def _lower(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers or {}).items()}


def translate(
    status: int,
    headers: Mapping[str, str],
    body: Any,
    *,
    what: str,
    now: datetime,
    client_request_id: str | None = None,
) -> GraphError | None:
    """The GraphError for a non-2xx response (or `$batch` item), or None for a success."""
    if 200 <= status < 300:
        return None
    headers = _lower(headers)
    code, message, body_request_id = _error_parts(body)
    request_id = headers.get("request-id") or body_request_id or client_request_id
    retry_after_s = parse_retry_after(headers.get("retry-after"), now)
    text = f"{what} -> {status}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message}"
    ids = [f"request-id {request_id}"] if request_id else []
    if client_request_id and client_request_id != request_id:
        ids.append(f"client-request-id {client_request_id}")
    if ids:
        text += f" ({', '.join(ids)})"
    kwargs: dict[str, Any] = {"status": status, "code": code, "request_id": request_id}
    if status == 429:
        return GraphThrottled(text, retry_after_s=retry_after_s, **kwargs)
    if status == 503 and code == _LEGACY_THROTTLE_CODE:
        if retry_after_s is None and message:
            match = _TRY_AFTER.search(message)
            retry_after_s = float(match.group(1)) if match else None
        return GraphThrottled(text, retry_after_s=retry_after_s, **kwargs)
    if status >= 500:
        return GraphTransientError(text, retry_after_s=retry_after_s, **kwargs)
    if status == 401:
        return GraphAuthError(text, **kwargs)
    return GraphPermanentError(text, **kwargs)


class GraphClient:
    """Microsoft Graph calls for license assignment; one attempt each, errors as GraphError."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str,
        throttle: Throttle,
        timeout_s: float,
        read_throttle: Throttle | None = None,
        utcnow: Callable[[], datetime] = _utcnow,
        breaker: Breaker = ALWAYS_CLOSED,
        observer: GraphObserver | None = None,
    ) -> None:
        """`throttle` paces writes; `read_throttle`, when given, paces reads by resource units.

        Without a read throttle, reads only pass the write throttle's pause gate. `observer` is told
        of every answer, `$batch` items included.
        """
        self._http = http
        self._breaker = breaker
        self._root = f"{base_url.rstrip('/')}/{API_VERSION}"
        self._throttle = throttle
        self._read_throttle = read_throttle
        # A dead host should fail fast; a slow Graph response gets the whole budget.
        self._timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        self._utcnow = utcnow
        self._observer = observer

    # -- single calls --------------------------------------------------------------------------

    def subscribed_skus(self) -> list[dict[str, Any]]:
        """The tenant's subscribed SKUs (`GET /subscribedSkus`)."""
        body = self._call("GET", "/subscribedSkus")
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise GraphTransientError("GET /subscribedSkus: response has no value list", status=200)
        return [v for v in value if isinstance(v, dict)]

    def get_user(self, user: str, select: Sequence[str]) -> dict[str, Any]:
        """A user's properties named in `select`."""
        body: dict[str, Any] = self._call("GET", f"{user_path(user)}{_select(select)}")
        return body

    def get_group(self, group_id: str, select: Sequence[str] = ("id", "displayName")) -> dict[str, Any]:
        """A group's properties named in `select` (`GET /groups/{id}`); ids only, never a name or a path."""
        try:
            canonical = str(uuid.UUID(group_id))
        except ValueError:
            raise GraphPermanentError(f"GET /groups: not a group id: {group_id[:100]!r}") from None
        body: dict[str, Any] = self._call("GET", f"/groups/{canonical}{_select(select)}")
        return body

    def users_page(self, select: Sequence[str], next_link: str | None = None,
                   top: int = MAX_PAGE_SIZE) -> tuple[list[dict[str, Any]], str | None]:
        """One page of `GET /users` (`$select`, `$top` up to 999); returns its users and the next page's link.

        Graph charges a page like one read, whatever its size: the cheap way to read a whole tenant.
        """
        first = f"/users{_select(select)}&$top={top}" if select else f"/users?$top={top}"
        return self._page(first, next_link)

    def groups_page(self, select: Sequence[str], filter_text: str | None = None,
                    next_link: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of `GET /groups` (`$select`, `$filter`); returns its groups and the next page's link."""
        parts = [_select(select)[1:]] if select else []
        if filter_text:
            parts.append("$filter=" + quote(filter_text, safe=""))
        return self._page("/groups" + ("?" + "&".join(parts) if parts else ""), next_link)

    def group_members_page(self, group_id: str, select: Sequence[str], next_link: str | None = None, *,
                           errors_only: bool = False) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a group's direct members (users and groups, `@odata.type` telling which).

        With `errors_only`, `GET /groups/{id}/membersWithLicenseErrors`: the users whose license
        assignment from this group is in error.
        """
        segment = "membersWithLicenseErrors" if errors_only else "members"
        query = f"{_select(select)}&$top={MAX_PAGE_SIZE}" if select else f"?$top={MAX_PAGE_SIZE}"
        return self._page(f"/groups/{quote(group_id, safe='')}/{segment}{query}", next_link)

    def _page(self, first: str, next_link: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a list: `first` (the first page's path) or `next_link`; its items and the next link."""
        base = first.partition("?")[0]
        if next_link is None:
            path = first
        elif next_link.startswith(self._root):
            path = next_link[len(self._root):]
        else:
            raise GraphPermanentError(f"GET {base}: next page link outside {self._root}: {next_link[:200]}")
        body = self._call("GET", path)
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise GraphTransientError(f"GET {base}: response has no value list", status=200)
        link = body.get("@odata.nextLink")
        return [v for v in value if isinstance(v, dict)], link if isinstance(link, str) else None

    def update_user(self, user: str, fields: Mapping[str, Any]) -> None:
        """PATCH user properties (e.g. usageLocation)."""
        self._call("PATCH", user_path(user), json_body=dict(fields), expect_object=False)

    def assign_license(self, user: str, add: list[dict[str, Any]], remove: list[str]) -> dict[str, Any]:
        """`POST /users/{user}/assignLicense`; returns the updated user."""
        path = f"{user_path(user)}/assignLicense"
        body: dict[str, Any] = self._call("POST", path, json_body=_assign_body(add, remove))
        return body

    def send(self, request: BatchRequest) -> BatchItemResult:
        """One item as a plain request, where a `$batch` envelope buys nothing; a failure comes back as its error.

        A success must carry a JSON object, except a PATCH's (204 No Content), as for the calls above.
        """
        method = request.method.upper()
        try:
            status, headers, body = self._exchange(method, request.url, json_body=request.body,
                                                   expect_object=method != "PATCH")
        except GraphError as exc:
            return BatchItemResult(request.id, exc.status or 0, {}, None, exc)
        return BatchItemResult(request.id, status, headers, body)

    # -- $batch --------------------------------------------------------------------------------

    def batch(self, requests: Sequence[BatchRequest]) -> dict[str, BatchItemResult]:
        """Send up to 20 items in one `POST /$batch`; results keyed by item id, in any order."""
        if not requests:
            return {}
        if len(requests) > MAX_BATCH:
            raise ValueError(f"a $batch takes at most {MAX_BATCH} requests, got {len(requests)}")
        ids = [r.id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError("$batch request ids must be unique")
        writes = sum(1 for r in requests if r.is_write)
        read_ru = sum(read_cost(r.url) for r in requests if not r.is_write)
        payload = {"requests": [r.to_json() for r in requests]}
        body = self._call("POST", "/$batch", json_body=payload, writes=writes, read_ru=read_ru)
        responses = body.get("responses") if isinstance(body, dict) else None
        if not isinstance(responses, list):
            raise GraphTransientError("POST /$batch: response has no responses list", status=200, ambiguous=True)
        now = self._utcnow()
        wanted = {r.id: r for r in requests}
        results: dict[str, BatchItemResult] = {}
        for raw in responses:
            if isinstance(raw, dict) and str(raw.get("id")) in wanted and str(raw.get("id")) not in results:
                item = self._item(wanted[str(raw["id"])], raw, now)
                results[item.id] = item
        for item_id, request in wanted.items():
            if item_id not in results:
                # Graph applied it or not: we cannot tell, so the caller must check before a resend.
                what = f"$batch item {item_id} {request.method.upper()} {request.url}"
                missing = GraphTransientError(f"{what}: missing from the response", ambiguous=True)
                results[item_id] = BatchItemResult(item_id, 0, {}, None, missing)
        return results

    def _item(self, request: BatchRequest, raw: Mapping[str, Any], now: datetime) -> BatchItemResult:
        """One item of a `$batch` answer, judged like a plain answer."""
        headers = _lower(raw.get("headers") if isinstance(raw.get("headers"), dict) else None)
        status, body = raw.get("status"), raw.get("body")
        what = f"$batch item {request.id} {request.method.upper()} {request.url}"
        if not isinstance(status, int):
            return BatchItemResult(request.id, 0, headers, body, GraphTransientError(f"{what}: no status",
                                                                                    ambiguous=True))
        error = self._answer(request.method.upper(), status, headers, body, what=what, now=now,
                             is_read=not request.is_write)
        if error is None and _malformed(request.method, status, body):
            error = GraphTransientError(f"{what} -> {status}: malformed body", status=status, ambiguous=True)
        return BatchItemResult(request.id, status, headers, body, error)

    # -- plumbing ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, json_body: Any = None, writes: int | None = None,
              read_ru: int | None = None, expect_object: bool = True) -> Any:
        """One request: throttle, send, answer. Returns the parsed JSON body (GraphError otherwise).

        With `expect_object` a success must carry a JSON object; otherwise an empty body is fine.
        """
        _, _, body = self._exchange(method, path, json_body=json_body, writes=writes, read_ru=read_ru,
                                    expect_object=expect_object)
        return body

    def _exchange(self, method: str, path: str, *, json_body: Any = None, writes: int | None = None,
                  read_ru: int | None = None, expect_object: bool = True) -> tuple[int, Mapping[str, str], Any]:
        """`_call`, returning the answer's status and headers with its body."""
        if writes is None:
            writes = 1 if method in WRITE_METHODS else 0
        if read_ru is None:
            read_ru = read_cost(path) if method not in WRITE_METHODS else 0
        what = f"{method} {path}"
        client_request_id = str(uuid.uuid4())
        self._acquire(writes, read_ru)
        admission = self._breaker.admit()  # GraphUnavailable while Graph does not answer this tenant
        response = self._send(method, path, json_body, admission, client_request_id)
        status, headers = response.status_code, response.headers
        body: Any = None
        parse_error: ValueError | None = None
        if response.content:
            try:
                body = json.loads(response.content)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                parse_error = exc
        error = self._answer(_label(method, path), status, headers, body, what=what, now=self._utcnow(),
                             is_read=writes == 0, client_request_id=client_request_id)
        self._report(admission, method, path, json_body,
                     f"{what} -> {status}" if isinstance(error, GraphTransientError) else None)
        if error is not None:
            log.debug("%s", error)
            raise error
        if parse_error is not None or not (isinstance(body, dict) or (body is None and not expect_object)):
            raise GraphTransientError(
                f"{what} -> {status}: malformed response body (client-request-id {client_request_id})",
                status=status,
                request_id=headers.get("request-id") or client_request_id,
                ambiguous=True,
            ) from parse_error
        return status, _lower(headers), body

    def _send(self, method: str, path: str, json_body: Any, admission: Admission,
              client_request_id: str) -> httpx.Response:
        """Put the request on the wire; a transport failure is told to the breaker and raised as GraphError."""
        what = f"{method} {path}"
        headers = {"client-request-id": client_request_id, "Accept": "application/json"}
        try:
            return self._http.request(method, self._root + path, json=json_body, headers=headers,
                                      timeout=self._timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            self._report(admission, method, path, json_body, f"{what}: {type(exc).__name__}")
            # Nothing reached Graph: safe to resend.
            self._observe(_label(method, path), 0, None)
            raise GraphTransientError(
                f"{what}: {type(exc).__name__} (client-request-id {client_request_id})",
                request_id=client_request_id,
            ) from exc
        except httpx.RequestError as exc:
            self._report(admission, method, path, json_body, f"{what}: {type(exc).__name__} after sending")
            # Timeout or connection lost after sending: Graph may have applied it.
            self._observe(_label(method, path), 0, None)
            raise GraphTransientError(
                f"{what}: {type(exc).__name__} after sending (client-request-id {client_request_id})",
                request_id=client_request_id,
                ambiguous=True,
            ) from exc
        except GraphError as exc:  # from the token provider: the identity platform answered, or was unreachable
            self._report(admission, method, path, json_body,
                         exc.message if isinstance(exc, GraphTransientError) else None)
            raise

    def _answer(self, method: str, status: int, headers: Mapping[str, str], body: Any, *, what: str,
                now: datetime, is_read: bool, client_request_id: str | None = None) -> GraphError | None:
        """What an answer (a plain response or a `$batch` item) means: None for a success, else its error.

        The throttle that answer speaks of and the observer are told of it; a throttle that came as a
        legacy 503 is told to the throttle as a 429 too.
        """
        bucket = self._bucket(status, headers, is_read=is_read)
        bucket.observe(status, headers)
        error = translate(status, headers, body, what=what, now=now, client_request_id=client_request_id)
        self._observe(method, status, error)
        if isinstance(error, GraphThrottled) and status != 429:
            bucket.observe(429, _throttle_headers(error))
        return error

    def _report(self, admission: Admission, method: str, path: str, json_body: Any, failure: str | None) -> None:
        """Tell the breaker whether Graph answered (`failure` None) or not, and which request it was."""
        if failure is None:
            self._breaker.record(admission, answered=True)
            return
        # A resend of the same request counts once towards the distinct requests that open the breaker.
        body = json.dumps(json_body, sort_keys=True, default=str).encode()
        request = f"{method} {path} {hashlib.blake2b(body, digest_size=8).hexdigest()}"
        self._breaker.record(admission, answered=False, request=request, error=failure)

    def _observe(self, method: str, status: int, error: GraphError | None) -> None:
        """Tell the observer, if any, what Graph answered."""
        if self._observer is None:
            return
        throttled = isinstance(error, GraphThrottled)
        try:
            self._observer(GraphAnswer(method, status, throttled, error.retry_after_s if throttled and error else None))
        except Exception:  # metrics must never fail a Graph call
            log.exception("Graph observer failed")

    def _acquire(self, writes: int, read_ru: int) -> None:
        """Wait for the write budget (writes) and the read budget (resource units of the reads)."""
        if writes or self._read_throttle is None:
            self._throttle.acquire(writes)  # 0 writes: only the pause gate
        if read_ru and self._read_throttle is not None:
            self._read_throttle.acquire(read_ru)

    def _bucket(self, status: int, headers: Mapping[str, str], *, is_read: bool) -> Throttle:
        """The budget a response speaks of: a resource-unit 429 or a read's answer → the read budget."""
        if self._read_throttle is None:
            return self._throttle
        if status == 429:
            about = " ".join(header(headers, name) or "" for name in THROTTLE_DETAIL_HEADERS)
            if "ResourceUnit" in about or "/Read/" in about:
                return self._read_throttle
            if "WriteLimit" in about or "/Write/" in about:
                return self._throttle
        return self._read_throttle if is_read else self._throttle


def _label(method: str, path: str) -> str:
    """The method an observer is told: `$batch` for the batch envelope."""
    return "$batch" if path == "/$batch" else method


def read_cost(path: str) -> int:
    """Resource units Graph charges a read (users 2, subscribedSkus and members 3, else 1; `$select` −1)."""
    base, _, query = path.partition("?")
    base = base.rstrip("/")
    if base.endswith("/subscribedSkus") or base.endswith("/members"):
        cost = 3
    elif base.startswith("/users"):
        cost = 2
    else:
        cost = 1
    if "$select=" in query:
        cost -= 1
    return max(1, cost)


def _malformed(method: str, status: int, body: Any) -> bool:
    """Whether a successful item's body is not what Graph sends (an object, or nothing for writes)."""
    if status == 204 or isinstance(body, dict):
        return False
    return body is not None or method.upper() == "GET"


def _throttle_headers(error: GraphThrottled) -> dict[str, str]:
    """Headers telling the throttle about a throttle that did not come as a 429 (legacy 503)."""
    return {"retry-after": repr(error.retry_after_s)} if error.retry_after_s is not None else {}
