"""The web console for HR and IT at `/`: a server-rendered page whose scripts call the API with the key."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

PACKAGE_DIR = Path(__file__).parent
STATIC_PATH = "/static"


def console_router(version: str) -> APIRouter:
    """The console page; autoescaping templates, no data of any job in the HTML itself."""
    templates = Jinja2Templates(directory=PACKAGE_DIR / "templates")
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    def console(request: Request) -> Response:
        return templates.TemplateResponse(request, "console.html", {"version": version, "static": STATIC_PATH})

    return router


def add_console(app: FastAPI) -> None:
    """Serve the console at `/` and its scripts and styles under /static."""
    app.include_router(console_router(app.version))
    app.mount(STATIC_PATH, StaticFiles(directory=PACKAGE_DIR / "static"), name="static")
