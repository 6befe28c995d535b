"""Token acquisition: scope and discovery choices, caching and refresh, and no secret in any message."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from config.settings import TenantProfile
from graphclient.auth import (
    GRAPH_SCOPE,
    MsalTokenProvider,
    certificate_credential,
    graph_scope,
    is_microsoft_authority,
)
from graphclient.errors import GraphAuthError, GraphTransientError

SECRET = "s3cr3t~VALUE.that-must-never-leak"
PASSWORD = "pem-passw0rd-never-shown"


def profile(**overrides: Any) -> TenantProfile:
    values: dict[str, Any] = {
        "name": "contoso",
        "tenant_id": "00000000-0000-0000-0000-000000000001",
        "client_id": "11111111-1111-1111-1111-111111111111",
        "client_secret": SecretStr(SECRET),
    }
    values.update(overrides)
    return TenantProfile(**values)


class FakeApp:
    """Stands in for msal.ConfidentialClientApplication."""

    def __init__(self, *results: dict[str, Any] | Exception) -> None:
        self.results = list(results)
        self.scopes: list[list[str]] = []
        self.removed = 0
        self.cached: str | None = None

    def acquire_token_for_client(self, scopes: list[str]) -> dict[str, Any] | None:
        self.scopes.append(scopes)
        if self.cached is not None:
            return {"access_token": self.cached, "token_source": "cache"}
        result = self.results.pop(0)
        if isinstance(result, Exception):
            raise result
        if "access_token" in result:
            self.cached = result["access_token"]
        return result

    def remove_tokens_for_client(self) -> None:
        self.removed += 1
        self.cached = None


@pytest.mark.parametrize(
    ("graph_url", "scope"),
    [
        ("https://graph.microsoft.com", GRAPH_SCOPE),
        ("https://127.0.0.1:8443", GRAPH_SCOPE),
        ("https://graph.microsoft.us", "https://graph.microsoft.us/.default"),
        ("https://dod-graph.microsoft.us/", "https://dod-graph.microsoft.us/.default"),
        ("https://microsoftgraph.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn/.default"),
    ],
)
def test_graph_scope(graph_url: str, scope: str) -> None:
    assert graph_scope(graph_url) == scope


def test_instance_discovery_only_for_microsoft_hosts() -> None:
    assert is_microsoft_authority("https://login.microsoftonline.com")
    assert is_microsoft_authority("https://login.microsoftonline.us/")
    assert not is_microsoft_authority("https://127.0.0.1:9443")


def test_app_is_built_lazily_once_and_tokens_are_cached() -> None:
    app = FakeApp({"access_token": "tok-1", "expires_in": 3599})
    built: list[TenantProfile] = []

    def factory(p: TenantProfile) -> FakeApp:
        built.append(p)
        return app

    provider = MsalTokenProvider(profile(), app_factory=factory)
    assert built == []  # constructing MSAL does network discovery: not before the first token
    assert provider.get_token() == "tok-1"
    assert provider.get_token() == "tok-1"
    assert len(built) == 1
    assert app.scopes == [[GRAPH_SCOPE], [GRAPH_SCOPE]]


def test_force_refresh_drops_the_cached_token_but_is_debounced() -> None:
    now = [100.0]
    app = FakeApp({"access_token": "tok-1"}, {"access_token": "tok-2"}, {"access_token": "tok-3"})
    provider = MsalTokenProvider(profile(), app_factory=lambda p: app, clock=lambda: now[0])
    assert provider.get_token() == "tok-1"
    assert provider.get_token(force_refresh=True) == "tok-2"
    # Many requests hitting 401 together must not each fetch a new token.
    assert provider.get_token(force_refresh=True) == "tok-2"
    assert app.removed == 1
    now[0] += 10
    assert provider.get_token(force_refresh=True) == "tok-3"


def test_msal_error_result_is_an_auth_error_without_the_secret() -> None:
    result = {
        "error": "invalid_client",
        "error_description": f"AADSTS7000215: Invalid client secret provided ({SECRET}).\r\nTrace ID: x",
        "correlation_id": "corr-1",
    }
    provider = MsalTokenProvider(profile(), app_factory=lambda p: FakeApp(result))
    with pytest.raises(GraphAuthError) as info:
        provider.get_token()
    error = info.value
    assert error.code == "invalid_client"
    assert "AADSTS7000215" in str(error)
    assert "Trace ID" not in str(error)
    assert error.request_id == "corr-1"
    assert SECRET not in str(error) and SECRET not in repr(error.args)


def test_transient_identity_errors_are_transient() -> None:
    provider = MsalTokenProvider(
        profile(), app_factory=lambda p: FakeApp({"error": "temporarily_unavailable", "error_description": "busy"})
    )
    with pytest.raises(GraphTransientError):
        provider.get_token()


def test_network_failure_is_transient_and_secret_free() -> None:
    boom = requests.ConnectionError(f"cannot reach login host while sending client_secret={SECRET}")
    provider = MsalTokenProvider(profile(), app_factory=lambda p: FakeApp(boom))
    with pytest.raises(GraphTransientError) as info:
        provider.get_token()
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None  # the original (which quotes the secret) is not chained


def test_construction_failure_is_retried_on_the_next_call() -> None:
    calls = []

    def factory(p: TenantProfile) -> FakeApp:
        calls.append(1)
        if len(calls) == 1:
            raise requests.ConnectionError("discovery unreachable")
        return FakeApp({"access_token": "tok"})

    provider = MsalTokenProvider(profile(), app_factory=factory)
    with pytest.raises(GraphTransientError):
        provider.get_token()
    assert provider.get_token() == "tok"


def test_real_msal_against_an_unreachable_authority_is_transient_and_secret_free() -> None:
    # Port 9 on loopback refuses at once: MSAL's discovery GET fails without waiting.
    p = profile(authority_host="https://127.0.0.1:9")
    provider = MsalTokenProvider(p, timeout_s=2.0)
    with pytest.raises(GraphTransientError) as info:
        provider.get_token()
    assert SECRET not in str(info.value)


@pytest.fixture
def pem_file(tmp_path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bulk-license test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    path = tmp_path / "app.pem"
    path.write_bytes(encrypted + cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_certificate_credential(pem_file: Path) -> None:
    credential = certificate_credential(pem_file.read_bytes(), PASSWORD)
    assert credential["private_key"].startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert credential["public_certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert credential["passphrase"] == PASSWORD


def test_certificate_with_wrong_password_says_so_without_the_password(pem_file: Path) -> None:
    with pytest.raises(GraphAuthError) as info:
        certificate_credential(pem_file.read_bytes(), "wrong-" + PASSWORD)
    assert PASSWORD not in str(info.value)
    assert "wrong password" in str(info.value)


def test_certificate_profile_builds_an_msal_app(pem_file: Path) -> None:
    p = profile(
        client_secret=None,
        certificate_path=pem_file,
        certificate_password=SecretStr(PASSWORD),
        authority_host="https://127.0.0.1:9",
    )
    provider = MsalTokenProvider(p, timeout_s=2.0)
    with pytest.raises(GraphTransientError) as info:  # loaded the key, then discovery failed
        provider.get_token()
    assert PASSWORD not in str(info.value)
