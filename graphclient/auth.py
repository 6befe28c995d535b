"""App-only tokens for Graph (MSAL client credentials) and the httpx auth that sends them.

Secrets and tokens never appear in a log line or an exception message.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import httpx

from graphclient.errors import GraphAuthError, GraphTransientError

if TYPE_CHECKING:
    from config.settings import TenantProfile

log = logging.getLogger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# Hosts Microsoft's instance discovery knows; any other authority host (a simulator, ADFS-like
# test IdP) must skip discovery or MSAL calls out to login.microsoftonline.com about it.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login-us.microsoftonline.com",
        "login.usgovcloudapi.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.de",
    }
)
# National-cloud Graph hosts, whose tokens need their own resource in the scope.
NATIONAL_GRAPH_DOMAINS = ("graph.microsoft.us", "dod-graph.microsoft.us", "microsoftgraph.chinacloudapi.cn")
# Token errors worth retrying (RFC 6749 codes the identity platform uses for outages).
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
# A forced refresh this soon after the last one reuses it: many requests failing with 401 at once
# must not each fetch a new token.
_REFRESH_DEBOUNCE_S = 5.0
_MAX_MESSAGE_CHARS = 500
_PEM_KEY = re.compile(rb"-----BEGIN (?:[A-Z ]+ )?PRIVATE KEY-----.+?-----END (?:[A-Z ]+ )?PRIVATE KEY-----", re.S)
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class TokenProvider(Protocol):
    """Gives a bearer token for Graph; `force_refresh` drops the cached one first."""

    def get_token(self, *, force_refresh: bool = False) -> str: ...


class ConfidentialApp(Protocol):
    """The part of `msal.ConfidentialClientApplication` we use."""

    def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any] | None: ...

    def remove_tokens_for_client(self) -> None: ...


def graph_scope(graph_url: str) -> str:
    """The `.default` scope for a Graph base URL (national clouds have their own resource)."""
    host = (urlsplit(graph_url).hostname or "").lower()
    if any(host == d or host.endswith("." + d) for d in NATIONAL_GRAPH_DOMAINS):
        return f"{graph_url.rstrip('/')}/.default"
    return GRAPH_SCOPE


def is_microsoft_authority(authority_host: str) -> bool:
    """Whether MSAL's instance discovery knows this authority host."""
    return (urlsplit(authority_host).hostname or "").lower() in MICROSOFT_AUTHORITY_HOSTS


def certificate_credential(pem: bytes, password: str | None) -> dict[str, Any]:
    """MSAL's client credential for a PEM holding a private key and its certificate.

    The certificate goes in as `public_certificate` (sent as x5c); MSAL computes its SHA-256
    thumbprint itself.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key_match = _PEM_KEY.search(pem)
    cert_match = _PEM_CERT.search(pem)
    if key_match is None or cert_match is None:
        raise GraphAuthError("certificate_path must be a PEM with a private key and its certificate")
    try:
        serialization.load_pem_private_key(key_match.group(0), password.encode() if password else None)
        cert = x509.load_pem_x509_certificate(cert_match.group(0))
    except (TypeError, ValueError):
        # Deliberately vague: the cause may quote key material.
        raise GraphAuthError("certificate_path: cannot load the key or certificate (wrong password?)") from None
    credential: dict[str, Any] = {
        "private_key": key_match.group(0).decode(),
        "public_certificate": cert_match.group(0).decode(),
    }
    if password:
        credential["passphrase"] = password
    log.debug("certificate sha256 thumbprint %s", cert.fingerprint(hashes.SHA256()).hex())
    return credential


def _msal_app(profile: TenantProfile, timeout_s: float) -> ConfidentialApp:
    """Build MSAL's app for a profile (this does network discovery)."""
    import msal

    credential: str | dict[str, Any]
    if profile.client_secret is not None:
        credential = profile.client_secret.get_secret_value()
    else:
        assert profile.certificate_path is not None  # guaranteed by TenantProfile validation
        password = profile.certificate_password.get_secret_value() if profile.certificate_password else None
        credential = certificate_credential(profile.certificate_path.read_bytes(), password)
    options: dict[str, Any] = {"authority": profile.authority}
    if not is_microsoft_authority(profile.authority_host):
        options["instance_discovery"] = False
    verify: str | bool = str(profile.ca_bundle) if profile.ca_bundle is not None else True
    app: ConfidentialApp = msal.ConfidentialClientApplication(
        profile.client_id,
        client_credential=credential,
        http_client=_http_session(verify, timeout_s),
        **options,
    )
    return app


def _http_session(verify: str | bool, timeout_s: float) -> Any:
    """A requests session for MSAL whose CA bundle and timeout apply to every request.

    MSAL's own `verify=` only sets `Session.verify`, which requests lets REQUESTS_CA_BUNDLE
    override, so a profile's CA bundle would be ignored wherever that variable is set.
    """
    import requests
    from requests.adapters import HTTPAdapter

    class Session(requests.Session):
        def request(  # only adds defaults, passes everything on
            self, method: str, url: str | bytes, *args: Any, **kwargs: Any
        ) -> Any:
            kwargs.setdefault("timeout", timeout_s)
            if kwargs.get("verify") is None:
                kwargs["verify"] = verify
            return super().request(method, url, *args, **kwargs)

    session = Session()
    # As MSAL's default session: one quiet retry of a failed connection.
    adapter = HTTPAdapter(max_retries=1)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class MsalTokenProvider:
    """App-only Graph tokens for one tenant profile, cached in memory by MSAL (per process)."""

    def __init__(
        self,
        profile: TenantProfile,
        *,
        timeout_s: float = 30.0,
        app_factory: Callable[[TenantProfile], ConfidentialApp] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._profile = profile
        self._app_factory = app_factory or (lambda p: _msal_app(p, timeout_s))
        self._clock = clock
        self._scope = graph_scope(profile.graph_url)
        self._lock = threading.Lock()
        self._app: ConfidentialApp | None = None
        self._refreshed_at: float | None = None

    def get_token(self, *, force_refresh: bool = False) -> str:
        """A valid access token; `force_refresh` discards the cached one (after a 401)."""
        with self._lock:
            app = self._ensure_app()
            if force_refresh:
                now = self._clock()
                if self._refreshed_at is None or now - self._refreshed_at >= _REFRESH_DEBOUNCE_S:
                    app.remove_tokens_for_client()
                    self._refreshed_at = now
            try:
                result = app.acquire_token_for_client(scopes=[self._scope])
            except Exception as exc:
                # Not chained (`from None`): MSAL's own exception may quote the client secret.
                raise self._translate_exception(exc) from None
        return self._token_from(result)

    def _ensure_app(self) -> ConfidentialApp:
        if self._app is None:
            try:
                self._app = self._app_factory(self._profile)
            except GraphAuthError:
                raise
            except Exception as exc:
                raise self._translate_exception(exc) from None  # not chained, as in get_token
        return self._app

    def _translate_exception(self, exc: Exception) -> Exception:
        """Network failures are transient; anything else MSAL raises is a configuration problem."""
        import requests

        what = f"token request for tenant profile {self._profile.name!r}"
        if isinstance(exc, requests.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
            # A CA bundle that does not match the authority will not fix itself.
            return GraphAuthError(f"{what} failed: TLS certificate verification failed", status=401)
        if isinstance(exc, requests.RequestException | OSError):
            return GraphTransientError(f"{what} failed: {type(exc).__name__}: {self._scrub(str(exc))}")
        return GraphAuthError(f"{what} failed: {type(exc).__name__}: {self._scrub(str(exc))}", status=401)

    def _token_from(self, result: dict[str, Any] | None) -> str:
        """The access token of an MSAL result, or the error it carries."""
        if result and isinstance(result.get("access_token"), str):
            return str(result["access_token"])
        result = result or {}
        error = str(result.get("error") or "no_token")
        # The first line is the AADSTS message; the rest is trace and correlation ids.
        lines = str(result.get("error_description") or "").splitlines()
        description = self._scrub(lines[0]) if lines else ""
        message = f"token request for tenant profile {self._profile.name!r} failed: {error}"
        if description:
            message += f": {description}"
        correlation_id = result.get("correlation_id")
        request_id = str(correlation_id) if correlation_id else None
        log.warning("%s", message)
        if error in _TRANSIENT_ERRORS:
            raise GraphTransientError(message, code=error, request_id=request_id)
        raise GraphAuthError(message, status=401, code=error, request_id=request_id)

    def _scrub(self, text: str) -> str:
        """Remove any secret the text might quote, and bound its length."""
        secrets = [
            s.get_secret_value()
            for s in (self._profile.client_secret, self._profile.certificate_password)
            if s is not None and s.get_secret_value()
        ]
        for secret in secrets:
            text = text.replace(secret, "***")
        return text[:_MAX_MESSAGE_CHARS]


class GraphAuth(httpx.Auth):
    """httpx auth: sends `Authorization: Bearer`, and on a 401 refreshes the token once and resends."""

    def __init__(self, tokens: TokenProvider) -> None:
        self._tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """The httpx auth generator."""
        request.headers["Authorization"] = f"Bearer {self._tokens.get_token()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self._tokens.get_token(force_refresh=True)}"
            yield request
