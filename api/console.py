"""The web console for HR and IT at `/`: a server-rendered page whose scripts call the API with the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from jobs.models import TERMINAL_JOB_STATUSES, JobStatus, UserStatus

PACKAGE_DIR = Path(__file__).parent
STATIC_PATH = "/static"

# The job's counts the console shows, each in an element `count-<name>` (a field of the job JSON):
# the users', then the calls'.
USER_COUNTS = (("succeeded", "Succeeded"), ("failed", "Failed"), ("cancelled", "Cancelled"), ("pending", "Pending"),
               ("unchanged", "Unchanged"))
CALL_COUNTS = (("throttled", "Throttled (429)"), ("retries", "Retries"))


def vocabulary() -> dict[str, Any]:
    """The server's words the page's scripts use (handed over in a JSON data block, so they never disagree)."""
    return {
        "statuses": {status.name: status.value for status in JobStatus},
        "terminal": sorted(status.value for status in TERMINAL_JOB_STATUSES),
        "results": {status.name: status.value for status in UserStatus},
        "counters": [name for name, _ in USER_COUNTS + CALL_COUNTS],
    }


def console_router(version: str) -> APIRouter:
    """The console page; autoescaping templates, no data of any job in the HTML itself."""
    templates = Jinja2Templates(directory=PACKAGE_DIR / "templates")
    router = APIRouter(include_in_schema=False)
    page = {"version": version, "static": STATIC_PATH, "vocabulary": vocabulary(), "user_counts": USER_COUNTS,
            "call_counts": CALL_COUNTS}

    @router.get("/", response_class=HTMLResponse)
    def console(request: Request) -> Response:
        return templates.TemplateResponse(request, "console.html", page)

    return router


def add_console(app: FastAPI) -> None:
    """Serve the console at `/` and its scripts and styles under /static."""
    app.include_router(console_router(app.version))
    app.mount(STATIC_PATH, StaticFiles(directory=PACKAGE_DIR / "static"), name="static")
