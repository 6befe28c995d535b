"""Real MSAL against graphsim over TLS: secret, certificate, refusals; Graph's 401s."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import msal
import pytest

from graphsim.server import SimServer

SCOPE = ["https://graph.microsoft.com/.default"]


@pytest.fixture(autouse=True)
def _requests_uses_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override a session's `verify`, which MSAL sets.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def _msal(sim: SimServer, credential: object, client_id: str | None = None) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(client_id or sim.info["client_id"], client_credential=credential,
                                              authority=sim.authority, instance_discovery=False,
                                              verify=sim.ca_path)


def _graph_get(sim: SimServer, tls: ssl.SSLContext, token: str, path: str) -> httpx.Response:
    return httpx.get(f"{sim.graph_url}/v1.0{path}", verify=tls,
                     headers={"Authorization": f"Bearer {token}"})


def test_secret(sim: SimServer, tls: ssl.SSLContext) -> None:
    result = _msal(sim, sim.info["client_secret"]).acquire_token_for_client(scopes=SCOPE)
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3600
    assert _graph_get(sim, tls, result["access_token"], "/subscribedSkus").status_code == 200


def test_certificate_sha1_thumbprint(sim: SimServer, tls: ssl.SSLContext) -> None:
    credential = {"private_key": Path(sim.info["key_path"]).read_text(), "thumbprint": sim.info["cert_thumbprint"]}
    result = _msal(sim, credential).acquire_token_for_client(scopes=SCOPE)
    assert "access_token" in result, result
    assert _graph_get(sim, tls, result["access_token"], "/users?$top=1").status_code == 200


def test_certificate_public_certificate(sim: SimServer) -> None:
    credential = {"private_key": Path(sim.info["key_path"]).read_text(),
                  "public_certificate": Path(sim.info["cert_path"]).read_text()}
    assert "access_token" in _msal(sim, credential).acquire_token_for_client(scopes=SCOPE)


def test_certificate_of_another_key_is_refused(sim: SimServer) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    result = _msal(sim, {"private_key": other, "thumbprint": sim.info["cert_thumbprint"]}).acquire_token_for_client(
        scopes=SCOPE)
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [700027]


def test_wrong_secret_is_refused(sim: SimServer) -> None:
    result = _msal(sim, "not-the-secret").acquire_token_for_client(scopes=SCOPE)
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert "access_token" not in result


def test_token_endpoint_errors(sim: SimServer, tls: ssl.SSLContext) -> None:
    url = f"{sim.authority}/oauth2/v2.0/token"
    base = {"grant_type": "client_credentials", "client_id": sim.info["client_id"],
            "client_secret": sim.info["client_secret"], "scope": SCOPE[0]}
    wrong_secret = httpx.post(url, data={**base, "client_secret": "x"}, verify=tls)
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"
    unknown = httpx.post(url, data={**base, "client_id": "00000000-0000-0000-0000-000000000001"},
                         verify=tls)
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [700016]
    scope = httpx.post(url, data={**base, "scope": "User.Read"}, verify=tls)
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"
    other_tenant = httpx.post(f"{sim.graph_url}/common-x/oauth2/v2.0/token", data=base, verify=tls)
    assert other_tenant.status_code == 400
    assert httpx.post(url, data=base, verify=tls).status_code == 200


def test_graph_401s(sim: SimServer, tls: ssl.SSLContext) -> None:
    for headers in ({}, {"Authorization": "Bearer garbage"}, {"Authorization": "Bearer a.b.c"},
                    {"Authorization": f"Bearer {sim.issue_token(lifetime_s=-1)}"}):
        response = httpx.get(f"{sim.graph_url}/v1.0/users", headers=headers, verify=tls)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "InvalidAuthenticationToken"
        assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    expired = httpx.get(f"{sim.graph_url}/v1.0/users", verify=tls,
                        headers={"Authorization": f"Bearer {sim.issue_token(lifetime_s=-1)}"})
    assert "expired" in expired.json()["error"]["message"]


def test_token_lifetime_knob(sim: SimServer, control: httpx.Client) -> None:
    control.post("/config", json={"token_lifetime_s": 120})
    result = _msal(sim, sim.info["client_secret"]).acquire_token_for_client(scopes=SCOPE)
    assert result["expires_in"] == 120


def test_token_lifetime_zero_issues_expired_tokens(sim: SimServer, control: httpx.Client, tls: ssl.SSLContext) -> None:
    assert control.post("/config", json={"token_lifetime_s": 0}).status_code == 200
    result = _msal(sim, sim.info["client_secret"]).acquire_token_for_client(scopes=SCOPE)
    assert result["expires_in"] == 0
    # Refused at once, however soon it is used: no window in which it still works.
    response = _graph_get(sim, tls, result["access_token"], "/subscribedSkus")
    assert response.status_code == 401 and "expired" in response.json()["error"]["message"]
    assert control.post("/config", json={"token_lifetime_s": -1}).status_code == 400


def test_readonly_app_gets_403_on_writes(sim: SimServer, tls: ssl.SSLContext) -> None:
    result = _msal(sim, sim.info["readonly_client_secret"], sim.info["readonly_client_id"]).acquire_token_for_client(
        scopes=SCOPE)
    token = result["access_token"]
    assert _graph_get(sim, tls, token, "/users?$top=1").status_code == 200
    user = sim.state.user_order[0].id
    response = httpx.post(f"{sim.graph_url}/v1.0/users/{user}/assignLicense", verify=tls,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"addLicenses": [], "removeLicenses": []})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Authorization_RequestDenied"
    assert response.json()["error"]["message"] == "Insufficient privileges to complete the operation."


def test_profile_with_certificate_bundle(sim: SimServer, tmp_path: Path) -> None:
    from config import load_tenants

    profile = tmp_path / "cert.toml"
    profile.write_text(f'[tenants.cert]\ntenant_id = "{sim.info["tenant_id"]}"\n'
                       f'client_id = "{sim.info["client_id"]}"\ncertificate_path = "{sim.info["cert_bundle_path"]}"\n'
                       f'authority_host = "{sim.graph_url}"\ngraph_url = "{sim.graph_url}"\n')
    tenant = load_tenants(profile)["cert"]
    assert tenant.certificate_path is not None
    pem = tenant.certificate_path.read_text()
    credential = {"private_key": pem, "public_certificate": Path(sim.info["cert_path"]).read_text()}
    assert "access_token" in _msal(sim, credential).acquire_token_for_client(scopes=SCOPE)
