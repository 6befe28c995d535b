"""The console page and its assets, GET /v1/tenants, and the security headers on every response."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.console import console_router
from api.security import CONTENT_SECURITY_POLICY
from tests.api.helpers import ALL_KEY, OTHER_KEY, SIM_KEY, auth

STATIC = Path(__file__).parents[2] / "api" / "static"


def test_tenants_lists_the_profiles_a_key_may_use_without_secrets(client: TestClient) -> None:
    assert client.get("/v1/tenants", headers=auth(ALL_KEY)).json() == {"value": [{"name": "other"}, {"name": "sim"}]}
    assert client.get("/v1/tenants", headers=auth(SIM_KEY)).json() == {"value": [{"name": "sim"}]}
    assert client.get("/v1/tenants", headers=auth(OTHER_KEY)).json() == {"value": [{"name": "other"}]}
    assert client.get("/v1/tenants").status_code == 401
    assert "s3cret" not in client.get("/v1/tenants", headers=auth()).text


def test_console_page_is_served_with_a_strict_policy(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    page = response.text
    assert '<label for="api-key">API key</label>' in page
    # No inline script or style, and nothing from another origin.
    assert re.findall(r"<script[^>]*>", page) == ['<script type="module" src="/static/console.js?v=0.1.0">']
    assert "<style" not in page and not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+\s*=", page)  # no inline event handlers
    assert "http://" not in page and "https://" not in page


def test_every_label_names_a_field_on_the_page(client: TestClient) -> None:
    page = client.get("/").text
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    fields = re.findall(r'<(?:input|select)\b[^>]*\bid="([^"]+)"', page)
    labelled = set(re.findall(r'<label for="([^"]+)"', page))
    assert labelled <= ids
    assert set(fields) <= labelled


def test_assets_are_served_and_never_write_html(client: TestClient) -> None:
    for path in sorted(STATIC.iterdir()):
        response = client.get(f"/static/{path.name}")
        assert response.status_code == 200, path.name
        assert response.headers["x-content-type-options"] == "nosniff"
        kind = "text/css" if path.suffix == ".css" else "javascript"
        assert kind in response.headers["content-type"], path.name
        if path.suffix == ".js":
            assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", path.read_text())


def test_api_answers_carry_the_headers_and_the_docs_page_keeps_its_scripts(client: TestClient) -> None:
    for response in (client.get("/healthz"), client.get("/v1/jobs", headers=auth()), client.get("/v1/jobs")):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "content-security-policy" not in docs.headers  # Swagger UI runs an inline script from its CDN
    assert docs.headers["x-content-type-options"] == "nosniff"


def test_the_page_template_escapes_what_it_is_given() -> None:
    app = FastAPI()
    app.include_router(console_router("<script>alert(1)</script>"))
    page = TestClient(app).get("/").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
