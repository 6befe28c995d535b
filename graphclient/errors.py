"""Errors raised by the Graph client, translated once at the HTTP boundary.

    GraphError                  any failed Graph or identity call
     +-- GraphThrottled         429 (or a legacy 503 throttle); carries retry_after_s
     +-- GraphTransientError    5xx, timeouts, connection errors, unparseable bodies; worth retrying
     +-- GraphPermanentError    400/403/404 and other 4xx; retrying cannot help
     |    +-- GraphAuthError    the identity platform refused our credentials
     +-- GraphUnavailable       not sent: Graph does not answer for the tenant (its circuit breaker is open)

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


class GraphUnavailable(GraphError):
    """Graph does not answer for this tenant (its circuit breaker is open): the call was not sent.

    Neither transient nor permanent: retrying at once cannot help, and the breaker probes Graph and
    closes by itself. `next_probe_at` (epoch seconds) is when Graph is next tried.
    """

    def __init__(self, message: str, *, next_probe_at: float | None = None) -> None:
        super().__init__(message)
        self.next_probe_at = next_probe_at


class ThrottleWaitTooLong(Exception):
    """The wait before the next request exceeds the inline budget; requeue the work after `wait_s`.

    Deliberately not a GraphError: nothing failed, and retry loops must not swallow it.
    """

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"throttle wait of {wait_s:.1f}s exceeds the inline budget")
        self.wait_s = wait_s
