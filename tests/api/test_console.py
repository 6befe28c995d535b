"""The console page and its assets, GET /v1/tenants, and the security headers on every response."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.console import console_router, vocabulary
from api.security import CONTENT_SECURITY_POLICY
from jobs.models import TERMINAL_JOB_STATUSES, JobStatus
from tests.api.helpers import ALL_KEY, ALL_NAME, OTHER_KEY, OTHER_NAME, SIM_KEY, SIM_NAME, auth

STATIC = Path(__file__).parents[2] / "api" / "static"


def test_tenants_lists_the_profiles_a_key_may_use_without_secrets(client: TestClient) -> None:
    assert client.get("/v1/tenants", headers=auth(ALL_KEY)).json() == {
        "value": [{"name": "other"}, {"name": "sim"}], "key": {"name": ALL_NAME, "may_write": True}}
    assert client.get("/v1/tenants", headers=auth(SIM_KEY)).json() == {
        "value": [{"name": "sim"}], "key": {"name": SIM_NAME, "may_write": True}}
    assert client.get("/v1/tenants", headers=auth(OTHER_KEY)).json() == {
        "value": [{"name": "other"}], "key": {"name": OTHER_NAME, "may_write": True}}
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
    # No inline script or style, and nothing from another origin; the one inline block is data, never run.
    assert re.findall(r"<script[^>]*>", page) == ['<script type="application/json" id="vocabulary">',
                                                  '<script type="module" src="/static/console.js?v=0.1.0">']
    assert "<style" not in page and not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+\s*=", page)  # no inline event handlers
    assert "http://" not in page and "https://" not in page


def test_the_page_hands_the_scripts_the_servers_vocabulary(client: TestClient) -> None:
    block = re.search(r'<script type="application/json" id="vocabulary">(.*?)</script>', client.get("/").text, re.S)
    assert block is not None
    words = json.loads(block.group(1))
    assert words == vocabulary()
    assert set(words["terminal"]) == {s.value for s in TERMINAL_JOB_STATUSES}  # `planned` included
    assert words["statuses"]["PLANNING"] == JobStatus.PLANNING.value
    page = client.get("/").text
    assert all(f'id="count-{name}"' in page for name in words["counters"])


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


def test_api_answers_carry_the_headers(client: TestClient) -> None:
    for response in (client.get("/healthz"), client.get("/v1/jobs", headers=auth()), client.get("/v1/jobs"),
                     client.get("/openapi.json")):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"


def directives(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in policy.split(";") if part.strip())}


def test_the_api_reference_runs_only_this_origin_s_scripts_under_a_policy(client: TestClient) -> None:
    """M7: /docs and /redoc load nothing from elsewhere, run no inline script, and say so in their CSP."""
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200, path
        policy = directives(page.headers["content-security-policy"])
        assert policy["script-src"] == ["'self'"], path  # no CDN, no 'unsafe-inline', no 'unsafe-eval'
        assert policy["default-src"] == ["'none'"] and policy["connect-src"] == ["'self'"]
        assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text, path
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, flags=re.S)
        assert scripts and all(re.search(r'\bsrc="/', attrs) and not body.strip() for attrs, body in scripts), path
        assert "<style" not in page.text and not re.search(r"\sstyle=", page.text)
        for src in re.findall(r'(?:src|href)="(/[^"]+)"', page.text):
            asset = client.get(src)
            assert asset.status_code == 200, src
            assert asset.headers["x-content-type-options"] == "nosniff"
    assert client.get("/docs/oauth2-redirect").status_code == 404  # no OAuth here, so no such page


def test_the_console_opens_the_reference_apart_from_its_key(client: TestClient) -> None:
    """The reference opens in a new browsing context without an opener, so it does not get the tab's key."""
    links = re.findall(r"<a\b[^>]*>", client.get("/").text)
    reference = [link for link in links if 'href="/docs"' in link]
    assert reference == ['<a href="/docs" target="_blank" rel="noopener noreferrer">']


def test_the_page_template_escapes_what_it_is_given() -> None:
    app = FastAPI()
    app.include_router(console_router("<script>alert(1)</script>"))
    page = TestClient(app).get("/").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_scan_form_asks_the_scan_routes_and_the_job_view_words_the_scan(client: TestClient) -> None:
    page = client.get("/").text
    assert all(f'id="{name}"' in page for name in ("scan-form", "scan-tenant", "inactive-days", "exclude-group",
                                                   "exclude-upns", "scan-skus", "job-scan"))
    node = shutil.which("node")
    if node is None:
        pytest.skip("no Node.js to run the console's pure modules")
    script = """
        const scan = await import(process.argv[1]);
        const reclaim = scan.scanRequest({tenant: "sim", kind: "reclaim", inactiveDays: "120", excludeGroup: " g1 ",
                                          excludeUpns: "svc-*\\nroom-*, x", skus: "EMS, ENTERPRISEPACK"});
        const cleanup = scan.scanRequest({tenant: "sim", kind: "redundant", inactiveDays: "90", excludeGroup: "",
                                          excludeUpns: "", skus: "EMS"});
        const line = scan.scanLine({scan: {outcome: "done", summary: {licensed_users: 10, users: 2,
            found: {inactive: 2}, excluded: {exclusion_group: 1}, sign_ins_read: true}}});
        const reading = scan.scanLine({scan: {outcome: null}});
        console.log(JSON.stringify([reclaim, cleanup, line, reading, scan.scanLine({})]));
    """
    done = subprocess.run([node, "--input-type=module", "-e", script, (STATIC / "scan.js").as_uri()],
                          capture_output=True, text=True, timeout=30, check=True)
    reclaim, cleanup, line, reading, none = json.loads(done.stdout)
    assert reclaim == {"path": "/v1/reclaim?tenant=sim&dry_run=true&inactive_days=120",
                       "body": {"skus": ["EMS", "ENTERPRISEPACK"], "exclude_upns": ["svc-*", "room-*", "x"],
                                "exclude_group": "g1"}}
    assert cleanup == {"path": "/v1/cleanup/redundant-direct?tenant=sim&dry_run=true&sku=EMS", "body": None}
    assert line == "Scan done: 10 licensed users read, 2 to change; found: 2 inactive; left alone: 1 exclusion group."
    assert (reading, none) == ("Reading the tenant…", "")
