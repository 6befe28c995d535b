"""Errors raised by the Graph client, translated once at the HTTP boundary.

    GraphError                  any failed Graph or identity call
     +-- GraphThrottled         429 (or a legacy 503 throttle); carries retry_after_s
     +-- GraphTransientError    5xx, timeouts, connection errors, unparseable bodies; worth retrying
     +-- GraphPermanentError    400/403/404 and other 4xx; retrying cannot help
          +-- GraphAuthError    the identity platform refused our credentials

`ambiguous` marks failures after which the request may have reached Graph and been applied
(read timeout, connection reset after sending): the caller must read state before retrying a write.
"""

from __future__ import annotations


class GraphError(Exception):
    """A failed call to Microsoft Graph or the identity platform."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after_s = retry_after_s
        self.ambiguous = ambiguous


class GraphThrottled(GraphError):
    """Graph said slow down (429); wait `retry_after_s` before the next call."""


class GraphTransientError(GraphError):
    """A failure that may pass: 5xx, timeout, dropped connection, malformed response."""


class GraphPermanentError(GraphError):
    """A failure that retrying will not fix: 4xx other than 429."""


class GraphAuthError(GraphPermanentError):
    """The identity platform refused to issue a token (wrong secret, unknown client, ...)."""


# Normalized failure reasons recorded per user.
REASON_USER_NOT_FOUND = "user_not_found"
REASON_NO_FREE_SEAT = "no_free_seat"
REASON_USAGE_LOCATION_MISSING = "usage_location_missing"
REASON_INVALID_USAGE_LOCATION = "invalid_usage_location"
REASON_LICENSE_NOT_ASSIGNED = "license_not_assigned"
REASON_CONFLICTING_LICENSES = "conflicting_licenses"
REASON_UNKNOWN_SKU = "unknown_sku"
REASON_SKU_NOT_ASSIGNABLE = "sku_not_assignable"
REASON_INVALID_DISABLED_PLAN = "invalid_disabled_plan"
REASON_FORBIDDEN = "forbidden"
REASON_AUTH_FAILED = "auth_failed"
REASON_RETRIES_EXHAUSTED = "retries_exhausted"
REASON_BAD_REQUEST = "bad_request"
REASON_GRAPH_ERROR = "graph_error"


def reason_for(status: int | None, code: str | None, message: str | None) -> str:
    """Map a Graph failure to our normalized reason.

    Graph reports nearly every license failure as 400 `Request_BadRequest` and only the message
    differs (messages "can change at any time"), so we match on stable fragments and fall back to
    a generic reason rather than guessing.
    """
    text = (message or "").lower()
    if status == 404 or code == "Request_ResourceNotFound":
        return REASON_USER_NOT_FOUND
    if status == 403 or code == "Authorization_RequestDenied":
        return REASON_FORBIDDEN
    if status == 401:
        return REASON_AUTH_FAILED
    if "usage location" in text:
        return REASON_USAGE_LOCATION_MISSING if "license assignment" in text else REASON_INVALID_USAGE_LOCATION
    if "does not have any available licenses" in text or "not enough licenses" in text:
        return REASON_NO_FREE_SEAT
    if "does not have a corresponding license" in text:
        return REASON_LICENSE_NOT_ASSIGNED
    if "conflicting" in text or "mutually exclusive" in text:
        return REASON_CONFLICTING_LICENSES
    if "does not correspond to a valid company license" in text:
        return REASON_UNKNOWN_SKU
    if "cannot be assigned to a user" in text:
        return REASON_SKU_NOT_ASSIGNABLE
    if "disabled plan" in text or "service plan" in text:
        return REASON_INVALID_DISABLED_PLAN
    if status == 400:
        return REASON_BAD_REQUEST
    return REASON_GRAPH_ERROR


class ThrottleWaitTooLong(Exception):
    """The wait before the next request exceeds the inline budget; requeue the work after `wait_s`.

    Deliberately not a GraphError: nothing failed, and retry loops must not swallow it.
    """

    def __init__(self, wait_s: float, *, paused: bool = False) -> None:
        super().__init__(f"throttle wait of {wait_s:.1f}s exceeds the inline budget")
        self.wait_s = wait_s
        self.paused = paused
