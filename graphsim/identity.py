"""The Microsoft identity platform's v2.0 endpoints: OpenID discovery and client-credentials tokens."""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

from graphsim.fixture import AppDef, Fixture
from graphsim.tokens import AssertionRefused, TokenIssuer, assertion_client_id, verify_client_assertion

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRAPH_RESOURCES = frozenset({"https://graph.microsoft.com", "https://graph.microsoft.com/",
                             "00000003-0000-0000-c000-000000000000"})


def aad_error(status: int, error: str, code: int, description: str) -> tuple[int, dict[str, Any]]:
    """An identity platform error: {error, error_description 'AADSTSnnn: ...', error_codes, ...}."""
    now = dt.datetime.now(dt.UTC)
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    text = (f"AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id} "
            f"Timestamp: {stamp}")
    return status, {"error": error, "error_description": text, "error_codes": [code], "timestamp": stamp,
                    "trace_id": trace_id, "correlation_id": correlation_id,
                    "error_uri": f"https://login.microsoftonline.com/error?code={code}"}


class IdentityService:
    """Answers discovery and token requests for the fixture's tenant and app registrations."""

    def __init__(self, fixture: Fixture, issuer: TokenIssuer, base_url: str,
                 lifetime_s: Callable[[], float]) -> None:
        self.fixture = fixture
        self.issuer = issuer
        self.base_url = base_url
        self._lifetime_s = lifetime_s
        self._apps: dict[str, AppDef] = {a.client_id.lower(): a for a in fixture.apps}

    def known_tenant(self, segment: str) -> bool:
        """Whether a tenant path segment names this tenant (by id or domain)."""
        return segment.lower() in (self.fixture.tenant_id, self.fixture.domain.lower())

    def discovery(self, tenant: str) -> tuple[int, dict[str, Any]]:
        """The OpenID configuration MSAL reads (it needs authorization_endpoint and token_endpoint)."""
        if not self.known_tenant(tenant):
            return aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to make sure "
                             "you have the correct tenant ID and are signing into the correct cloud.")
        base = f"{self.base_url}/{tenant}"
        tid = self.fixture.tenant_id
        return 200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{self.base_url}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.base_url}/{tid}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "tid", "ver"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }

    def token(self, tenant: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Handle `POST /{tenant}/oauth2/v2.0/token` for grant_type=client_credentials."""
        if not self.known_tenant(tenant):
            return aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found. Check to make sure "
                             "you have the correct tenant ID and are signing into the correct cloud.")
        try:
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            form = {}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(basic[6:]).decode("utf-8").partition(":")
                client_id, secret = unquote(user), unquote(password)
            except ValueError:
                pass
        assertion = form.get("client_assertion")
        if client_id is None and assertion:
            client_id = assertion_client_id(assertion)
        grant = form.get("grant_type")
        if grant is None:
            return aad_error(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'grant_type'.")
        if grant != "client_credentials":
            return aad_error(400, "unsupported_grant_type", 70003,
                             f"The app requested an unsupported grant type '{grant}'.")
        if not client_id:
            return aad_error(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'client_id'.")
        app = self._apps.get(client_id.lower())
        if app is None:
            return aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' "
                             f"was not found in the directory '{self.fixture.domain}'. This can happen if the "
                             "application has not been installed by the administrator of the tenant or "
                             "consented to by any user in the tenant. You may have sent your authentication "
                             "request to the wrong tenant.")
        scope = form.get("scope")
        if not scope:
            return aad_error(400, "invalid_request", 900144,
                             "The request body must contain the following parameter: 'scope'.")
        for value in scope.split():
            resource, sep, rest = value.rpartition("/")
            if not sep or rest != ".default":
                return aad_error(400, "invalid_scope", 1002012, f"The provided value for scope {value} is not "
                                 "valid. Client credential flows must have a scope value with /.default "
                                 "suffixed to the resource identifier (application ID URI).")
            if resource not in GRAPH_RESOURCES:
                return aad_error(400, "invalid_resource", 500011, f"The resource principal named {resource} "
                                 f"was not found in the tenant named {self.fixture.domain}.")
        if assertion:
            if form.get("client_assertion_type") != JWT_BEARER:
                return aad_error(400, "invalid_request", 50027, "Invalid client_assertion_type.")
            if app.cert_pem is None:
                return aad_error(401, "invalid_client", 700027, "Client assertion failed signature "
                                 "validation. [Reason - The key was not found.]")
            audiences = {f"{self.base_url}/{t}/oauth2/v2.0/token"
                         for t in (tenant, self.fixture.tenant_id, self.fixture.domain)}
            try:
                verify_client_assertion(assertion, app.cert_pem, app.client_id.lower(), audiences, time.time())
            except AssertionRefused as exc:
                return aad_error(401, "invalid_client", exc.code, exc.description)
        elif secret is not None:
            if app.secret is None or not hmac.compare_digest(secret.encode(), app.secret.encode()):
                return aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the "
                                 "secret being sent in the request is the client secret value, not the client "
                                 f"secret ID, for a secret added to app '{app.client_id}'.")
        else:
            return aad_error(401, "invalid_client", 7000216, "'client_assertion', 'client_secret' or "
                             "'request' is required for the 'client_credentials' grant type.")
        lifetime_s = self._lifetime_s()
        token = self.issuer.issue(app.client_id.lower(), app.roles, time.time(), lifetime_s)
        return 200, {"token_type": "Bearer", "expires_in": int(lifetime_s), "ext_expires_in": int(lifetime_s),
                     "access_token": token}
