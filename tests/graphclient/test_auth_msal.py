"""MSAL for real against a tiny local identity endpoint over TLS (instance discovery off, CA bundle)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from config.settings import TenantProfile
from graphclient.auth import GRAPH_SCOPE, MsalTokenProvider
from graphclient.errors import GraphAuthError

TENANT = "00000000-0000-0000-0000-0000000000aa"
SECRET = "local-idp-secret-value"


def _self_signed(tmp_path: Path, name: str, *, ip: str | None = None) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        ).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key_pem)
    return cert_path, key_path


class LocalIdp:
    """Serves OIDC discovery and a token endpoint; issues numbered tokens; records token requests."""

    def __init__(self, tmp_path: Path) -> None:
        self.cert_path, key_path = _self_signed(tmp_path, "idp", ip="127.0.0.1")
        self.token_requests: list[dict[str, list[str]]] = []
        self.reject_with: dict[str, Any] | None = None
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                base = f"https://127.0.0.1:{idp.port}/{TENANT}"
                if self.path.startswith(f"/{TENANT}/v2.0/.well-known/openid-configuration"):
                    self._json(
                        200,
                        {
                            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                            "token_endpoint": f"{base}/oauth2/v2.0/token",
                            "issuer": f"{base}/v2.0",
                        },
                    )
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                idp.token_requests.append(form)
                if idp.reject_with is not None:
                    self._json(401, idp.reject_with)
                    return
                self._json(
                    200,
                    {"access_token": f"token-{len(idp.token_requests)}", "token_type": "Bearer", "expires_in": 3600},
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, key_path)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[LocalIdp]:
    server = LocalIdp(tmp_path)
    yield server
    server.close()


def _profile(idp: LocalIdp, **credential: Any) -> TenantProfile:
    return TenantProfile(
        name="local",
        tenant_id=TENANT,
        client_id="22222222-2222-2222-2222-222222222222",
        authority_host=idp.url,
        ca_bundle=idp.cert_path,
        **credential,
    )


def test_client_secret_token_cache_and_forced_refresh(idp: LocalIdp) -> None:
    provider = MsalTokenProvider(_profile(idp, client_secret=SecretStr(SECRET)), timeout_s=5.0)
    assert provider.get_token() == "token-1"
    assert provider.get_token() == "token-1"  # from MSAL's cache
    assert provider.get_token(force_refresh=True) == "token-2"
    assert len(idp.token_requests) == 2
    form = idp.token_requests[0]
    assert form["grant_type"] == ["client_credentials"]
    assert form["scope"] == [GRAPH_SCOPE]
    assert form["client_secret"] == [SECRET]


def test_certificate_credential_sends_a_signed_assertion(idp: LocalIdp, tmp_path: Path) -> None:
    cert_path, key_path = _self_signed(tmp_path, "app")
    pem = tmp_path / "app.pem"
    pem.write_bytes(key_path.read_bytes() + cert_path.read_bytes())
    provider = MsalTokenProvider(_profile(idp, certificate_path=pem), timeout_s=5.0)
    assert provider.get_token() == "token-1"
    form = idp.token_requests[0]
    assert "client_secret" not in form
    assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    header_b64 = form["client_assertion"][0].split(".")[0]
    import base64

    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    assert "x5c" in header  # the public certificate rides along
    # msal >= 1.35 (our floor) signs with PS256 and names the certificate by its SHA-256 thumbprint only.
    sha256 = x509.load_pem_x509_certificate(cert_path.read_bytes()).fingerprint(hashes.SHA256())
    assert header["alg"] == "PS256"
    assert header["x5t#S256"].rstrip("=") == base64.urlsafe_b64encode(sha256).decode().rstrip("=")
    assert "x5t" not in header


def test_rejected_secret_is_an_auth_error_that_does_not_quote_it(idp: LocalIdp) -> None:
    idp.reject_with = {
        "error": "invalid_client",
        "error_description": f"AADSTS7000215: Invalid client secret provided: {SECRET}",
    }
    provider = MsalTokenProvider(_profile(idp, client_secret=SecretStr(SECRET)), timeout_s=5.0)
    with pytest.raises(GraphAuthError) as info:
        provider.get_token()
    assert info.value.code == "invalid_client"
    assert SECRET not in str(info.value)
