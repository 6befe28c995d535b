"""The web console in a real headless Chromium, against real processes: Redis, graphsim over TLS, a
Celery worker and the API. Sign in, a refused upload's error table, a fixed upload dropped on the
page, live progress over the event stream to completion, the results download; untrusted cells
shown as text only; layout at desktop and phone sizes.

Needs a Chromium on the machine (`apt-get install chromium`, or BULKLICENSE_CHROMIUM=/path/to/chrome);
without one these tests skip. Screenshots go to $BULKLICENSE_SCREENSHOTS when set (the README's come
from `BULKLICENSE_SCREENSHOTS=docs/screenshots`), else to a temporary directory.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import API_KEY, OTHER_KEY, POWER_BI_PRO, SIM_KEY, Stack, sim_profile

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PAYLOAD = "<img src=x onerror=alert(window.__injected=1)>"
WAIT_MS = 60_000


def find_chromium() -> str | None:
    """The browser to drive: $BULKLICENSE_CHROMIUM, else the first Chromium or Chrome on the PATH."""
    named = os.environ.get("BULKLICENSE_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium found: install one with `apt-get install chromium` "
                    "(or set BULKLICENSE_CHROMIUM to a Chromium or Chrome executable)")
    return path


@pytest.fixture(scope="module")
def stack(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("console")
    # `sim-approval`: the simulated tenant again, under a profile that requires approval of every job.
    env = {"BULKLICENSE_CHUNK_SIZE": "5", "BULKLICENSE_RETRY_BACKOFF_BASE_S": "0.05",
           "BULKLICENSE_API_KEYS": f"{API_KEY}:*,{SIM_KEY}:sim|sim-approval,{OTHER_KEY}:other"}
    s = Stack(workdir, sim_args=["--users", "200", "--seed", "3", "--latency-ms", "30"], env=env,
              extra_profiles=lambda sim: sim_profile("sim-approval", sim) + "require_approval = true\n")
    try:
        yield s.start(workers=1)
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


class Watch:
    """What a page did that it must not: dialogs opened, script errors, requests carrying the key."""

    def __init__(self, page: Any) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.urls: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: self.urls.append(request.url))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Watch]]:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    tab = context.new_page()
    watch = Watch(tab)
    yield tab, watch
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    named = os.environ.get("BULKLICENSE_SCREENSHOTS")
    folder = Path(named) if named else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_users(stack: Stack, count: int) -> list[str]:
    """UPNs of simulated users with a usage location and no license."""
    with stack.control() as control:
        users = control.get("/users").json()["value"]
    upns = [u["userPrincipalName"] for u in users if not u["assignedLicenses"] and u.get("usageLocation")]
    assert len(upns) >= count
    return upns[:count]


def csv_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def sign_in(tab: Any, stack: Stack, key: str = API_KEY) -> Any:
    """Opens the console and signs in with the keyboard alone; returns the page's response."""
    response = tab.goto(f"{stack.api_url}/")
    key_field = tab.get_by_label("API key")
    key_field.wait_for()
    assert tab.evaluate("document.activeElement.id") == "api-key"
    tab.keyboard.type(key)
    tab.keyboard.press("Enter")
    tab.locator("#workspace").wait_for(state="visible")
    return response


def table(tab: Any, selector: str) -> list[list[str]]:
    """A table body's cells as text."""
    rows: list[list[str]] = tab.eval_on_selector_all(
        f"{selector} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    return rows


def drop_file(tab: Any, name: str, text: str) -> None:
    """Drops a file on the drop zone, as dragging it from the desktop does."""
    tab.evaluate("""([name, text]) => {
        const data = new DataTransfer();
        data.items.add(new File([text], name, {type: "text/csv"}));
        const zone = document.getElementById("drop-zone");
        for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
        }
    }""", [name, text])


def test_upload_fix_watch_and_download(stack: Stack, page: tuple[Any, Watch], shots: Path) -> None:
    tab, watch = page
    users = free_users(stack, 24)
    missing = "left.last.year@contoso.example"
    slow = users[0]
    response = sign_in(tab, stack)
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert [o.strip() for o in tab.locator("#tenant option").all_inner_texts()] == ["sim", "sim-approval"]

    # A file with mistakes: refused, each problem in the table with its row, column, value and message.
    bad = [{"user": u, "add": "POWER_BI_PRO"} for u in users[:3]]
    bad[1]["add"] = "POWER_BI_PROO"
    bad[2]["user"] = "no-at-sign.contoso.example"
    tab.get_by_label("CSV file").set_input_files(
        {"name": "onboarding.csv", "mimeType": "text/csv", "buffer": csv_text(bad).encode()})
    # The server makes dry runs, so every upload is previewed before anything is written.
    assert tab.locator("#upload").inner_text() == "Upload and preview"
    tab.locator("#upload").click()
    tab.locator("#upload-errors").wait_for(state="visible")
    errors = table(tab, "#error-table")
    by_column = {row[1]: row for row in errors}
    assert by_column["add"][:3] == ["3", "add", "POWER_BI_PROO"]
    assert "did you mean" in by_column["add"][3] and "POWER_BI_PRO" in by_column["add"][3]
    assert by_column["user"][:3] == ["4", "user", "no-at-sign.contoso.example"]
    tab.screenshot(path=shots / "console-upload-errors.png")

    # The fixed file, dropped on the page: accepted, then followed live to the end.
    good = [{"user": u, "add": "POWER_BI_PRO", "employeeId": f"E{i:03d}"} for i, u in enumerate(users)]
    good.append({"user": missing, "add": "POWER_BI_PRO", "employeeId": "E999"})
    with stack.control() as control:  # one user's writes are throttled twice: the job runs for seconds
        control.post("/config", json={"force_429": {"count": 2, "retry_after_s": 2.0, "user": slow}})
    drop_file(tab, "onboarding-fixed.csv", csv_text(good))
    assert "onboarding-fixed.csv" in tab.locator("#file-chosen").inner_text()
    tab.locator("#upload").click()
    tab.locator("#job").wait_for(state="visible")
    assert tab.locator("#upload-errors").is_hidden()
    # The preview: the plan read from the tenant, nothing written yet.
    tab.locator("#run").wait_for(state="visible", timeout=WAIT_MS)
    assert tab.locator("#job-status").inner_text() == "planned"
    assert tab.locator("#plan-changes").inner_text() == "24"
    assert table(tab, "#plan-failures") == [["user not found", "1"]]
    assert [row[0] for row in table(tab, "#plan-seats")] == ["POWER_BI_PRO"]
    with stack.control() as control:
        assert control.get("/writes", params={"user": slow}).json()["value"] == []
    tab.screenshot(path=shots / "console-preview.png")
    tab.locator("#run").click()
    tab.wait_for_function("""() => document.getElementById("job-status").textContent === "running"
        && Number(document.getElementById("count-throttled").textContent) >= 1""", timeout=WAIT_MS)
    tab.screenshot(path=shots / "console-progress.png")
    tab.wait_for_function("""() => document.getElementById("job-status").textContent === "completed with errors"
        && !document.getElementById("failures").hidden""", timeout=WAIT_MS)
    job_id = tab.locator("#job-id").inner_text()
    assert tab.locator("#count-succeeded").inner_text() == "24"
    assert tab.locator("#count-failed").inner_text() == "1"
    assert tab.locator("#count-pending").inner_text() == "0"
    assert tab.locator("#job-percent").inner_text() == "100%"
    assert table(tab, "#failure-reasons") == [["user not found", "1"]]
    assert [row[:3] for row in table(tab, "#failed-rows")] == [["26", missing, "user not found"]]
    assert tab.locator("#cancel").is_hidden()
    tab.screenshot(path=shots / "console-finished.png")

    # Progress came from the event stream (no polling of the job), and no URL ever carried the key.
    assert f"{stack.api_url}/v1/jobs/{job_id}/events" in watch.urls
    assert f"{stack.api_url}/v1/jobs/{job_id}" not in watch.urls
    assert not [url for url in watch.urls if API_KEY in url]
    assert tab.evaluate("localStorage.length") == 0 and tab.context.cookies() == []

    # The results CSV, fetched with the key and handed over as a download.
    with tab.expect_download() as download:
        tab.get_by_role("button", name="Download results CSV").click()
    assert download.value.suggested_filename == f"{job_id}-results.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {(r["user"], r["status"], r["employeeId"]) for r in rows} == (
        {(u, "succeeded", f"E{i:03d}") for i, u in enumerate(users)} | {(missing, "failed", "E999")})
    with tab.expect_download() as failed_download:
        tab.get_by_role("button", name="Download failed rows CSV").click()
    failed_rows = list(csv.DictReader(io.StringIO(Path(failed_download.value.path()).read_text())))
    assert [(r["user"], r["reason"]) for r in failed_rows] == [(missing, "user_not_found")]

    # The job list shows it, with its status and age.
    tab.get_by_role("button", name="Refresh").click()
    tab.get_by_role("button", name=f"Open job {job_id}").wait_for()
    listed = next(row for row in table(tab, "#job-list") if row[0] == job_id[:12])
    assert listed[1:4] == ["sim", "completed with errors", "25"] and listed[4].endswith(("ago", "now"))

    # Readable on a phone: nothing wider than the screen.
    tab.set_viewport_size(PHONE)
    assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    tab.screenshot(path=shots / "console-phone.png", full_page=False)
    assert watch.dialogs == [] and watch.errors == []


def test_untrusted_cells_are_shown_as_text_only(stack: Stack, page: tuple[Any, Watch]) -> None:
    tab, watch = page
    sign_in(tab, stack)
    body = f"user,add,{PAYLOAD}\n{PAYLOAD},POWER_BI_PRO,{PAYLOAD}\n"
    tab.get_by_label("CSV file").set_input_files(
        {"name": f"{PAYLOAD}.csv", "mimeType": "text/csv", "buffer": body.encode()})
    tab.locator("#upload").click()
    tab.locator("#upload-errors").wait_for(state="visible")

    user_row = next(row for row in table(tab, "#error-table") if row[1] == "user")
    assert user_row[2] == PAYLOAD  # the cell, as text
    assert PAYLOAD in tab.locator("#file-chosen").inner_text()
    assert tab.locator("main img").count() == 0
    assert tab.evaluate("window.__injected") is None
    assert watch.dialogs == []
    # Focus is visible when moving by keyboard.
    tab.locator("#tenant").focus()
    tab.keyboard.press("Tab")
    outline = tab.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")


# --- features the server will report: dry run with a plan, run, resume, rollback ----------------
# The backend for these is still to come, so the browser answers their calls itself (the rest is the
# real API): the console must show each one only when the job JSON reports it, and call it right.
PLANNED = "f0" * 16
ROLLED_BACK = "r0" * 16


def fake_job(job_id: str, status: str, **fields: Any) -> dict[str, Any]:
    """A job JSON as GET /v1/jobs/{id} gives it."""
    return {"id": job_id, "tenant": "sim", "status": status, "total": 3, "succeeded": 0, "failed": 0,
            "cancelled": 0, "pending": 3, "throttled": 0, "retries": 0, "created_at": "2030-01-01T00:00:00Z",
            "started_at": None, "finished_at": None, "rate_per_s": 0.0, "eta_s": None, "source": "csv",
            "warnings": [], **fields}


PLAN = {"changes": 2, "unchanged": 1, "predicted_failures": {"user_not_found": 1},
        "warnings": {"may_conflict": 1},
        "seats": [{"sku_id": "f8a1db68-be16-40ed-86d5-cb42ce701560", "sku": "POWER_BI_PRO", "needed": 2,
                   "released": 0, "free": 1, "shortfall": 1},
                  {"sku_id": "efccb6f7-5641-4e0e-bd10-b4976e1bf68e", "sku": "EMS", "needed": 1, "released": 1,
                   "free": 4, "shortfall": 0}]}


class ScriptedServer:
    """Answers, inside the browser, the calls of a job that is previewed, paused, resumed and rolled back."""

    def __init__(self) -> None:
        self.jobs = {PLANNED: fake_job(PLANNED, "planned", dry_run=True, unchanged=1, plan=PLAN)}
        self.posts: list[str] = []

    def install(self, tab: Any) -> None:
        tab.route(lambda url: "/v1/jobs?" in url and "dry_run=true" in url, self.submit)
        tab.route(lambda url: any(f"/v1/jobs/{job_id}" in url for job_id in (PLANNED, ROLLED_BACK)), self.job)

    def submit(self, route: Any) -> None:
        self.posts.append(route.request.url)
        route.fulfill(status=202, json={"id": PLANNED, "status": "planning", "total": 3, "warnings": []})

    def job(self, route: Any) -> None:
        request = route.request
        path = request.url.split("/v1/jobs/", 1)[1]
        job_id, _, tail = path.partition("/")
        job = self.jobs[job_id]
        if request.method == "POST":
            self.posts.append(request.url)
            route.fulfill(status=202, json=self.act(job_id, tail.split("?")[0]))
        elif tail == "events":
            terminal = job["status"] in ("completed", "completed_with_errors", "cancelled", "failed")
            body = f"retry: 50\n\nid: 1\nevent: progress\ndata: {json.dumps(job)}\n\n"
            body += f"id: 1\nevent: end\ndata: {json.dumps(job)}\n\n" if terminal else ""
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)
        elif tail.startswith("results"):
            route.fulfill(json={"value": []})
        else:
            route.fulfill(json=job)

    def act(self, job_id: str, action: str) -> dict[str, Any]:
        done = {"succeeded": 2, "failed": 1, "pending": 0, "unchanged": 1}
        if action == "run":
            self.jobs[job_id] = fake_job(job_id, "paused", paused_reason="seat_shortage", succeeded=1, pending=2)
        elif action == "resume":
            self.jobs[job_id] = fake_job(job_id, "completed_with_errors", kind="assign", **done)
        elif action == "rollback":
            self.jobs[ROLLED_BACK] = fake_job(ROLLED_BACK, "completed", kind="rollback", succeeded=2, pending=0,
                                              total=2)
            return {"id": ROLLED_BACK, "status": "queued", "total": 2}
        return {"id": job_id, "status": self.jobs[job_id]["status"]}


def test_preview_resume_and_rollback_appear_when_the_job_offers_them(stack: Stack,
                                                                      page: tuple[Any, Watch]) -> None:
    tab, watch = page
    server = ScriptedServer()
    server.install(tab)
    sign_in(tab, stack)
    assert tab.locator("#upload").inner_text() == "Upload and preview"
    assert tab.locator("#preview-note").is_visible()
    tab.get_by_label("CSV file").set_input_files(
        {"name": "plan.csv", "mimeType": "text/csv", "buffer": b"user,add\na@contoso.example,EMS\n"})
    tab.locator("#upload").click()

    # The plan, with the choice to wait for seats since one license is short.
    tab.locator("#run").wait_for(state="visible")
    assert server.posts[0].endswith("/v1/jobs?tenant=sim&dry_run=true")
    assert tab.locator("#job-status").inner_text() == "planned"
    assert [tab.locator(f"#plan-{name}").inner_text() for name in ("changes", "unchanged", "conflicts")] == [
        "2", "1", "1"]
    assert table(tab, "#plan-failures") == [["user not found", "1"]]
    assert table(tab, "#plan-seats") == [["POWER_BI_PRO", "2", "0", "1", "1"], ["EMS", "1", "1", "4", "0"]]
    assert tab.locator("#plan-seats tbody tr.short").count() == 1
    assert tab.locator("#count-unchanged").inner_text() == "1"
    assert tab.locator("#resume").is_hidden() and tab.locator("#rollback").is_hidden()
    tab.get_by_label("When seats run short, wait for seats to be freed instead of failing those users").check()
    tab.get_by_role("button", name="Run this job").click()

    # Paused for seats: the reason, and Resume.
    tab.locator("#resume").wait_for(state="visible")
    assert server.posts[1].endswith(f"/v1/jobs/{PLANNED}/run?on_seat_shortage=wait")
    assert tab.locator("#job-paused").inner_text() == "paused: seat shortage"
    assert tab.locator("#preview").is_hidden()
    tab.locator("#resume").click()

    # Finished: Rollback, which opens the job that undoes it.
    tab.locator("#rollback").wait_for(state="visible")
    assert server.posts[2].endswith(f"/v1/jobs/{PLANNED}/resume")
    assert tab.locator("#cancel").is_hidden()
    tab.locator("#rollback").click()
    tab.locator("#job-id").filter(has_text=ROLLED_BACK).wait_for()
    assert server.posts[3].endswith(f"/v1/jobs/{PLANNED}/rollback")
    tab.locator("#job-status").filter(has_text=re.compile(r"^completed$")).wait_for()
    assert watch.dialogs == [] and watch.errors == []


def test_a_refused_key_is_said_so_and_kept_nowhere(stack: Stack, page: tuple[Any, Watch]) -> None:
    tab, watch = page
    tab.goto(f"{stack.api_url}/")
    tab.get_by_label("API key").fill("not-a-key-of-ours")
    tab.get_by_role("button", name="Sign in").click()
    tab.locator("#sign-in-error").filter(has_text="That API key was not accepted.").wait_for()
    assert tab.locator("#workspace").is_hidden()
    assert tab.evaluate("sessionStorage.length + localStorage.length") == 0
    assert tab.get_by_label("API key").input_value() == ""
    assert not [url for url in watch.urls if "not-a-key-of-ours" in url]


def test_only_a_dry_run_is_shown_as_a_preview(stack: Stack, page: tuple[Any, Watch]) -> None:
    """The console's status rules use the server's vocabulary: a real job reading its users is no preview."""
    tab, _ = page
    tab.goto(f"{stack.api_url}/")
    shown = tab.evaluate("""async () => {
        const rules = await import("/static/vocabulary.js");
        const job = (status, dry_run) => ({ status, dry_run, succeeded: 1 });
        return {
            preview: [rules.isPreview(job("planning", true)), rules.isPreview(job("planned", true)),
                      rules.isPreview(job("planning", false)), rules.isPreview(job("running", false))],
            terminal: ["planned", "completed", "cancelled", "running", "paused"].map(
                (status) => rules.isTerminal(job(status, false))),
        };
    }""")
    assert shown == {"preview": [True, True, False, False], "terminal": [True, True, True, False, False]}


def test_the_console_reads_event_streams_split_anywhere(stack: Stack, page: tuple[Any, Watch]) -> None:
    """The console's SSE parser, fed a stream cut at awkward places (as the network may deliver it)."""
    tab, _ = page
    tab.goto(f"{stack.api_url}/")
    stream = "retry: 700\r\n\r\n: keep-alive\r\nid: 7\r\nevent: progress\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n" \
             "data: no type\n\nid: 9\rid\revent: end\rdata: x\r\r"
    parsed = tab.evaluate("""async (text) => {
        const { SseParser } = await import("/static/sse.js");
        return [1, 2, 3, 5, 8, text.length].map((size) => {
            const parser = new SseParser();
            const events = [];
            for (let i = 0; i < text.length; i += size) events.push(...parser.push(text.slice(i, i + size)));
            return { events, retry: parser.retryMs, last: parser.lastEventId };
        });
    }""", stream)
    assert parsed == 6 * [{
        "events": [{"type": "progress", "data": "{\"a\":\n1}", "id": "7"},
                   {"type": "message", "data": "no type", "id": "7"},
                   {"type": "end", "data": "x", "id": ""}],
        "retry": 700, "last": ""}]


# Records what the page's Content-Security-Policy blocked (an init script runs whatever the policy).
CSP_LISTENER = """document.addEventListener("securitypolicyviolation", (e) => {
    (window.__cspViolations = window.__cspViolations || []).push(`${e.violatedDirective} ${e.blockedURI}`);
});"""


def test_the_api_reference_renders_under_its_policy_apart_from_the_key(stack: Stack, page: tuple[Any, Watch]) -> None:
    """M7: /docs and /redoc run only this origin's scripts under a CSP, and the console's link opens them in a
    browsing context of their own, which does not get the signed-in tab's key."""
    tab, watch = page
    tab.context.add_init_script(CSP_LISTENER)
    requested: list[str] = []
    failed: list[str] = []
    errors: list[str] = []
    tab.context.on("request", lambda request: requested.append(request.url))  # of every page of the context
    tab.context.on("requestfailed", lambda request: failed.append(request.url))
    tab.context.on("weberror", lambda error: errors.append(str(error.error)))
    sign_in(tab, stack)
    with tab.context.expect_page() as opened:
        tab.get_by_role("link", name="API reference").click()
    docs = opened.value
    docs.locator(".swagger-ui .opblock").first.wait_for(timeout=WAIT_MS)
    assert docs.url == f"{stack.api_url}/docs"
    assert docs.locator(".swagger-ui .opblock").count() >= 12  # every operation of the API
    assert docs.evaluate("sessionStorage.getItem('bulklicense.apiKey')") is None
    assert docs.evaluate("window.opener") is None
    assert tab.evaluate("sessionStorage.getItem('bulklicense.apiKey')") == API_KEY  # the console's own tab keeps it
    docs.locator(".opblock-summary").first.click()  # an operation opens: the UI runs, not only its first paint
    docs.locator(".opblock-body").first.wait_for()
    assert docs.evaluate("window.__cspViolations || []") == []

    redoc = tab.context.new_page()
    response = redoc.goto(f"{stack.api_url}/redoc")
    assert "script-src 'self';" in response.headers["content-security-policy"]
    redoc.get_by_role("heading", name="bulk-license").first.wait_for(timeout=WAIT_MS)
    redoc.get_by_text("Submit a job", exact=False).first.wait_for()
    # ReDoc's sidebar shows its maker's logo from their CDN: the policy keeps that request from leaving.
    logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
    assert set(redoc.evaluate("window.__cspViolations || []")) <= {f"img-src {logo}"}
    assert any(url.startswith(f"{stack.api_url}/docs-assets/swagger-ui-bundle.js") for url in requested)
    assert any(url.startswith(f"{stack.api_url}/docs-assets/redoc.standalone.js") for url in requested)
    # Besides this origin: ReDoc's search worker, made from a blob of this page, and the logo.
    assert {url for url in requested if not url.startswith((stack.api_url, f"blob:{stack.api_url}/"))} <= {logo}
    assert set(failed) <= {logo}
    assert not errors and not watch.errors and not watch.dialogs


def test_an_export_is_read_under_a_chosen_mode_and_its_preview_lists_the_users(
        stack: Stack, page: tuple[Any, Watch], shots: Path) -> None:
    tab, watch = page
    users = free_users(stack, 55)
    missing = "gone.since.the.export@contoso.example"
    sign_in(tab, stack)
    # An admin center export: what users hold, not what to do.
    header = "User principal name,Display name,Licenses,Block credential,Object Id"
    rows = [f"{upn},User {i},{'Unlicensed' if i == 0 else 'Power BI Pro'},False,{i}" for i, upn in enumerate(users)]
    export = "\n".join([header, *rows, f"{missing},Gone,Power BI Pro,False,99"]) + "\n"

    # Without a mode the intent is ambiguous: refused, saying what to choose.
    assert tab.locator("#mode").is_visible()
    tab.get_by_label("CSV file").set_input_files(
        {"name": "Users.csv", "mimeType": "text/csv", "buffer": export.encode()})
    tab.locator("#upload").click()
    tab.locator("#upload-errors").wait_for(state="visible")
    assert "choose mode=exact" in table(tab, "#error-table")[0][3]

    # "Exactly these": previewed, with how each column was read and every planned user, page by page.
    tab.get_by_label("The file lists").select_option("exact")
    tab.locator("#upload").click()
    tab.locator("#run").wait_for(state="visible", timeout=WAIT_MS)
    assert tab.locator("#upload-errors").is_hidden()
    assert table(tab, "#reading-columns") == [
        ["User principal name", "user"], ["Display name", "kept"],
        ["Licenses", "licenses to hold (mode=exact: the others are removed)"], ["Block credential", "kept"],
        ["Object Id", "kept"]]
    assert "mode exact" in tab.locator("#reading-summary").inner_text()
    tab.locator("#plan-page").filter(has_text="Users 1–50 of 56").wait_for()
    first = table(tab, "#plan-users")
    assert len(first) == 50
    assert first[0] == ["2", users[0], "unchanged", "already as asked"]
    assert first[1] == ["3", users[1], "would change", "add POWER_BI_PRO"]
    # A finished dry run shows its plan, not a progress bar at 100 %.
    assert tab.locator("#progress-row").is_hidden() and tab.locator("#job-counts").is_hidden()
    tab.screenshot(path=shots / "console-preview-users.png")
    tab.get_by_role("button", name="Next").click()
    tab.locator("#plan-page").filter(has_text="Users 51–56 of 56").wait_for()
    last = table(tab, "#plan-users")
    assert [row[1] for row in last] == [*users[50:], missing]
    assert last[-1][2:] == ["would fail", "user not found: user 'gone.since.the.export@contoso.example' does not "
                                          "exist in the tenant"]
    assert tab.locator("#plan-next").is_disabled()
    tab.get_by_role("button", name="Previous").click()
    tab.locator("#plan-page").filter(has_text="Users 1–50 of 56").wait_for()
    with stack.control() as control:  # nothing was written
        assert control.get("/writes", params={"user": users[1]}).json()["value"] == []
    assert watch.dialogs == [] and watch.errors == []


def test_a_job_awaiting_approval_is_approved_from_another_key_only(stack: Stack, page: tuple[Any, Watch]) -> None:
    tab, watch = page
    users = free_users(stack, 60)[-3:]  # users no other test of the module writes to
    sign_in(tab, stack, SIM_KEY)
    tab.get_by_label("Tenant", exact=True).select_option("sim-approval")
    tab.get_by_label("CSV file").set_input_files(
        {"name": "gated.csv", "mimeType": "text/csv", "buffer": csv_text([{"user": u, "add": "EMS"} for u in users])
         .encode()})
    tab.locator("#upload").click()
    tab.locator("#run").wait_for(state="visible", timeout=WAIT_MS)
    tab.locator("#run").click()

    # The run waits for approval once planned: its submitter's key sees why, without Approve or Reject.
    tab.locator("#approval-title").filter(has_text="Awaiting approval").wait_for(timeout=WAIT_MS)
    waiting_id = tab.locator("#job-id").inner_text()
    assert tab.locator("#job-status").inner_text() == "planned"
    assert "You submitted this job with this key" in tab.locator("#approval-text").inner_text()
    assert tab.locator("#approve").is_hidden() and tab.locator("#reject").is_hidden()
    assert tab.locator("#run").is_hidden() and tab.locator("#cancel").is_visible()
    assert tab.locator("#plan-changes").inner_text() == "3"
    with stack.control() as control:
        assert all(control.get("/writes", params={"user": u}).json()["value"] == [] for u in users)

    # Another key finds it in the list, awaiting approval, and approves it: its run writes.
    tab.get_by_role("button", name="Sign out").click()
    sign_in(tab, stack)
    tab.get_by_role("button", name=f"Open job {waiting_id}").wait_for()
    listed = next(row for row in table(tab, "#job-list") if row[0] == waiting_id[:12])
    assert listed[2] == "planned, awaiting approval"
    tab.get_by_role("button", name=f"Open job {waiting_id}").click()
    tab.locator("#approve").wait_for(state="visible", timeout=WAIT_MS)
    assert "Approve to run it" in tab.locator("#approval-text").inner_text()
    tab.get_by_role("button", name="Approve and run").click()
    tab.locator("#job-id").filter(has_text=re.compile(f"^(?!{waiting_id}$)")).wait_for()
    tab.locator("#job-status").filter(has_text=re.compile(r"^completed$")).wait_for(timeout=WAIT_MS)
    assert tab.locator("#count-succeeded").inner_text() == "3"
    with stack.control() as control:
        assert all(len(control.get("/writes", params={"user": u}).json()["value"]) == 1 for u in users)
    assert watch.dialogs == [] and watch.errors == []


# --- jobs from the tenant itself, licenses held through groups, rows dated ahead ------------------
# Every text the job's status badge shows, in order (a MutationObserver: no state is missed between polls).
STATUS_LOG = """() => {
    const badge = document.getElementById("job-status");
    window.__statuses = [];
    new MutationObserver(() => window.__statuses.push(badge.textContent))
        .observe(badge, {childList: true, characterData: true, subtree: true});
}"""


def tab_order(tab: Any, start: str, steps: int) -> list[str]:
    """The ids focus moves through when Tab is pressed `steps` times from the element `start`."""
    tab.locator(f"#{start}").focus()
    order = []
    for _ in range(steps):
        tab.keyboard.press("Tab")
        order.append(tab.evaluate("document.activeElement.id"))
    return order


def last_free_users(stack: Stack, count: int) -> list[str]:
    """UPNs of the last simulated users free of licenses: the other tests of the module take the first ones."""
    with stack.control() as control:
        users = control.get("/users").json()["value"]
    return [u["userPrincipalName"] for u in users if not u["assignedLicenses"] and u.get("usageLocation")][-count:]


def direct_licensed(stack: Stack, count: int) -> list[dict[str, Any]]:
    """Simulated users holding licenses directly and through no group (what reclamation may take back)."""
    with stack.control() as control:
        views = control.get("/licenses").json()["value"]
    held = [v for v in views if v["licenses"] and all(lic["direct"] and not lic["groups"] for lic in v["licenses"])]
    assert len(held) >= count
    return held[:count]


def test_a_reclamation_dry_run_from_the_form_shows_the_scan_and_the_seats_it_frees(
        stack: Stack, page: tuple[Any, Watch], shots: Path) -> None:
    tab, watch = page
    unused, on_leave = direct_licensed(stack, 2)
    with stack.control() as control:  # two old accounts, disabled: one is found, one left alone by its UPN
        for user in (unused, on_leave):
            body = {"accountEnabled": False, "createdDaysAgo": 400, "signedInDaysAgo": 200}
            assert control.patch(f"/users/{user['id']}", json=body).status_code == 200
    sign_in(tab, stack)
    tab.evaluate(STATUS_LOG)

    # Each field has a name of its own, and the form is walked by the keyboard alone, in reading order.
    for name in ("Tenant to scan", "Find", "Days without a successful sign-in", "Exclusion group (object id, optional)",
                 "UPN patterns to leave alone (optional)", "Licenses (optional)"):
        assert tab.get_by_label(name, exact=True).count() == 1, name
    assert tab_order(tab, "scan-tenant", 6) == [
        "scan-kind", "inactive-days", "exclude-group", "exclude-upns", "scan-skus", "scan-submit"]
    assert tab.evaluate("getComputedStyle(document.activeElement).outlineStyle") not in ("", "none")
    tab.get_by_label("Find", exact=True).select_option("redundant")  # no days or exclusions for a cleanup
    assert tab_order(tab, "scan-kind", 2) == ["scan-skus", "scan-submit"]
    tab.get_by_label("Find", exact=True).select_option("reclaim")

    # A mistake is refused with its field and value, and nothing is submitted.
    tab.get_by_label("Exclusion group (object id, optional)").fill("On leave")
    tab.get_by_role("button", name="Scan and preview").click()
    tab.locator("#upload-errors").wait_for(state="visible")
    assert table(tab, "#error-table") == [["–", "exclude_group", "On leave", "must be a group's object id (a GUID)"]]
    assert tab.locator("#job").is_hidden()
    tab.get_by_label("Exclusion group (object id, optional)").fill("")

    tab.get_by_label("Days without a successful sign-in").fill("120")
    tab.get_by_label("UPN patterns to leave alone (optional)").fill(on_leave["userPrincipalName"].upper())
    with stack.control() as control:  # a slower tenant: the scan is seen reading before its plan
        control.post("/config", json={"latency_ms": 150})
    try:
        tab.get_by_label("Licenses (optional)").press("Enter")
        tab.locator("#job").wait_for(state="visible")
        assert tab.locator("#upload-errors").is_hidden()
        tab.locator("#run").wait_for(state="visible", timeout=WAIT_MS)
    finally:
        with stack.control() as control:
            control.post("/config", json={"latency_ms": 30})
    job_id = tab.locator("#job-id").inner_text()
    with stack.api() as api:
        job = api.get(f"/v1/jobs/{job_id}").json()
    assert (job["kind"], job["status"], job["dry_run"]) == ("reclaim", "planned", True)
    assert job["scan"]["request"]["inactive_days"] == 120
    statuses = tab.evaluate("window.__statuses")
    assert "planning" in statuses and statuses[-1] == "planned"
    assert statuses.index("planning") < statuses.index("planned")

    # The scan's findings in words, the seats it frees, and each user it would change.
    summary = job["scan"]["summary"]
    line = tab.locator("#job-scan").inner_text()
    assert line.startswith(f"Scan done: {summary['licensed_users']} licensed users read, {summary['users']} to change")
    assert "left alone: " in line and "1 UPN pattern" in line and f"{summary['found']['disabled']} disabled" in line
    assert tab.locator("#job-scan").get_attribute("aria-live") == "polite"
    assert tab.locator("#plan-failures-title").inner_text() == "Predicted failures: none"
    assert tab.locator("#plan-failures").is_hidden()
    seats = table(tab, "#plan-seats")
    assert [(row[0], row[2]) for row in seats] == [(s["sku"], str(s["released"])) for s in job["plan"]["seats"]]
    assert sum(int(row[2]) for row in seats) == sum(summary["removals"].values()) > 0
    # Each user by UPN (a scan's rows name users by object id), with why the license is taken back.
    rows = {row[1]: row[2:] for row in table(tab, "#plan-users")}
    action = next(r["action"] for r in stack.results(job_id) if r["user"] == unused["id"])
    assert rows[unused["userPrincipalName"]] == ["would change", f"{action} (the account is disabled)"]
    assert len(rows) == summary["users"] and all("@" in upn for upn in rows)
    assert on_leave["userPrincipalName"] not in rows
    tab.screenshot(path=shots / "console-reclaim-preview.png")
    assert watch.dialogs == [] and watch.errors == []


def test_removing_a_license_a_group_gives_names_the_group_against_the_predicted_failure(
        stack: Stack, page: tuple[Any, Watch]) -> None:
    tab, watch = page
    *members, adder = last_free_users(stack, 3)
    group_name = "Finance <b>analysts</b> (Power BI)"  # a name is the tenant's text: shown as text only
    with stack.control() as control:
        assert control.patch(f"/skus/{POWER_BI_PRO}", json={"enabled": 10_000}).status_code == 200
        created = control.post("/groups", json={"displayName": group_name, "members": [*members, adder],
                                                "licenses": [{"sku": POWER_BI_PRO}]})
        assert created.status_code == 201, created.text
    sign_in(tab, stack)
    rows = [{"user": m, "add": "", "remove": "POWER_BI_PRO"} for m in members]
    rows.append({"user": adder, "add": "POWER_BI_PRO", "remove": ""})  # the group gives it already
    tab.get_by_label("CSV file").set_input_files(
        {"name": "leavers.csv", "mimeType": "text/csv", "buffer": csv_text(rows).encode()})
    tab.locator("#upload").click()
    tab.locator("#run").wait_for(state="visible", timeout=WAIT_MS)

    # The preview: predicted to fail, each user with the group the license comes from.
    against = f"(POWER_BI_PRO via {group_name})"
    assert table(tab, "#plan-failures") == [["inherited from group", "2"]]
    assert tab.locator("#plan-via-group").inner_text() == "1"
    *users, added = table(tab, "#plan-users")
    assert [row[1:3] for row in users] == [[m, "would fail"] for m in members]
    assert all(row[3].startswith("inherited from group") and row[3].endswith(against) for row in users)
    assert added[1:] == [adder, "unchanged", f"already held through a group {against}"]
    assert tab.locator("#plan-users b").count() == 0

    # Run: nothing is written, and each failed row names the group too.
    tab.get_by_role("button", name="Run this job").click()
    tab.locator("#job-status").filter(has_text="completed with errors").wait_for(timeout=WAIT_MS)
    tab.locator("#failures").wait_for(state="visible")
    failed = table(tab, "#failed-rows")
    assert [row[1:3] for row in failed] == [[m, "inherited from group"] for m in members]
    assert all(row[3].endswith(against) for row in failed)
    with stack.control() as control:
        assert all(control.get("/writes", params={"user": m}).json()["value"] == [] for m in members)
    assert watch.dialogs == [] and watch.errors == []


def test_a_dry_run_with_a_row_dated_ahead_shows_rows_by_day_and_seats_by_date(
        stack: Stack, page: tuple[Any, Watch]) -> None:
    tab, watch = page
    now_user, later_user = last_free_users(stack, 4)[:2]
    ahead = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()
    sign_in(tab, stack)
    tab.get_by_label("CSV file").set_input_files({"name": "joiners.csv", "mimeType": "text/csv", "buffer": csv_text(
        [{"user": now_user, "add": "EMS", "effective_date": ""},
         {"user": later_user, "add": "EMS", "effective_date": ahead}]).encode()})
    # The assignment choice is a labelled select reached by Tab from the column field before it.
    assert tab_order(tab, "keep-columns", 1) == ["assignment"]
    tab.get_by_label("A license a group already gives").select_option("direct")
    tab.locator("#upload").click()
    tab.locator("#run").wait_for(state="visible", timeout=WAIT_MS)
    assert any("assignment=direct" in url and "dry_run=true" in url for url in watch.urls)

    # Rows by day: one row now, one on its day; the seat table by date, and each user's day.
    schedule = tab.locator("#schedule")
    # A preview holds nothing yet: it says what its run will hold, not "0 waiting".
    assert schedule.is_visible() and tab.locator("#schedule-summary").inner_text() == (
        "Rows by day (1 dated ahead: held for their day once this job runs)")
    days = table(tab, "#schedule-days")
    assert [row[1] for row in days] == ["1", "1"]
    assert days[0][0] == "at submission" and days[1][0].startswith(ahead)
    seats = table(tab, "#schedule-seats")
    assert [(row[0][:10], row[1], row[2], row[3]) for row in seats] == [
        ("at submiss", "EMS", "1", "0"), (ahead, "EMS", "1", "0")]
    assert int(seats[0][4]) == int(seats[1][4]) + 1  # the day's free seats count the add before it
    assert tab.get_by_role("table", name="The job's rows by the day they are due").count() == 1
    assert tab.get_by_role("table", name="Seats by date").count() == 1
    users = {row[1]: row[2:] for row in table(tab, "#plan-users")}
    assert users[now_user] == ["would change", "add EMS"]
    assert users[later_user][0] == "would change" and users[later_user][1].startswith(f"on {ahead}")
    # The section folds from the keyboard, and fits a phone's width.
    tab.locator("#schedule-summary").focus()
    tab.keyboard.press("Enter")
    assert tab.evaluate("document.getElementById('schedule').open") is False
    tab.keyboard.press("Enter")
    assert tab.evaluate("document.getElementById('schedule').open") is True
    tab.set_viewport_size(PHONE)
    assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert watch.dialogs == [] and watch.errors == []
