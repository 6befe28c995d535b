"""The interactive API reference, `/docs` (Swagger UI) and `/redoc` (ReDoc), with no script from elsewhere.

Their files come from the `fastapi-offline` package (a locked, hash-checked dependency) and are
served by the API itself under /docs-assets; the pages start them from our own script files, so the
pages' Content-Security-Policy allows scripts from this origin only and no inline script at all.
"""

from __future__ import annotations

from importlib import metadata, resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from api.console import PACKAGE_DIR, STATIC_PATH

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs-assets"
ASSETS_PACKAGE = "fastapi_offline"
# Swagger UI and ReDoc set styles from their scripts (React style attributes, styled-components):
# styles may be inline here, scripts may not. Search runs in a worker ReDoc makes from a blob.
REFERENCE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)


def assets_dir() -> Path:
    """Where the installed package keeps Swagger UI's and ReDoc's files."""
    return Path(str(resources.files(ASSETS_PACKAGE) / "static"))


def reference_router(openapi_url: str, title: str) -> APIRouter:
    """The two pages: server-rendered, no inline script or style, the assets versioned by their package."""
    templates = Jinja2Templates(directory=PACKAGE_DIR / "templates")
    context = {"openapi_url": openapi_url, "title": title, "static": STATIC_PATH, "assets": ASSETS_PATH,
               "assets_version": metadata.version("fastapi-offline")}
    router = APIRouter(include_in_schema=False)

    @router.get(DOCS_PATH, response_class=HTMLResponse)
    def swagger_ui(request: Request) -> Response:
        return templates.TemplateResponse(request, "swagger.html", context)

    @router.get(REDOC_PATH, response_class=HTMLResponse)
    def redoc(request: Request) -> Response:
        return templates.TemplateResponse(request, "redoc.html", context)

    return router


def add_reference(app: FastAPI) -> dict[str, str]:
    """Serve /docs, /redoc and their assets; returns the pages' paths with their Content-Security-Policy."""
    if app.openapi_url is None:
        return {}
    app.include_router(reference_router(app.openapi_url, app.title))
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="docs-assets")
    return {DOCS_PATH: REFERENCE_POLICY, REDOC_PATH: REFERENCE_POLICY}
