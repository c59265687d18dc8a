"""The browser pages the API serves, all from packaged files: the profile console and API docs.

Nothing here loads from another host, so the pages work on an air-gapped network:

- ``/console``: the profile console (``online/api/console/``: plain HTML, CSS and JavaScript,
  no build step). It calls the public REST API only, with the API key the user enters.
- ``/docs`` and ``/redoc``: Swagger UI and ReDoc, from the assets the ``fastapi-offline``
  package ships (MIT; Swagger UI is Apache-2.0, ReDoc MIT), instead of FastAPI's CDN links.

The pages need no key (they hold no data); the data they show does.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

__all__ = ["CONSOLE_DIR", "docs_assets_dir", "mount_assets", "router"]

CONSOLE_DIR = Path(__file__).parent.parent / "console"
DOCS_ASSETS = "/docs-assets"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# the console's own files only: no inline script, no other host
_CONSOLE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)

# Swagger UI and ReDoc pages carry inline scripts; the policy keeps every load on this server.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'self'"
)

router = APIRouter(include_in_schema=False)


def _with_csp(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _DOCS_CSP
    return page


def docs_assets_dir() -> Path:
    """The folder of Swagger UI's and ReDoc's JavaScript and CSS (from ``fastapi-offline``)."""
    return Path(str(resources.files("fastapi_offline") / "static"))


@lru_cache(maxsize=1)
def _redoc_bundle() -> bytes:
    # ReDoc's sidebar shows its vendor's logo from a CDN: point it at an empty image instead
    # (the component hides the logo when it fails to load), so the page contacts no other host
    js = (docs_assets_dir() / "redoc.standalone.js").read_bytes()
    return js.replace(_REDOC_LOGO, b"data:,")


_REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"


def mount_assets(app: FastAPI) -> None:
    """Serve the console's and the docs' static files (the app is built with docs_url=None)."""
    app.mount("/console/assets", StaticFiles(directory=CONSOLE_DIR), name="console-assets")
    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets_dir()), name="docs-assets")


@router.get("/console")
async def console() -> FileResponse:
    """The profile console page."""
    return FileResponse(
        CONSOLE_DIR / "index.html",
        headers={"Content-Security-Policy": _CONSOLE_CSP, "Cache-Control": "no-cache"},
    )


@router.get(f"{DOCS_ASSETS}/redoc.standalone.js")
async def redoc_bundle() -> Response:
    """ReDoc's bundle without its one outside link (served ahead of the static mount)."""
    return Response(_redoc_bundle(), media_type="text/javascript",
                    headers={"Cache-Control": "public, max-age=86400"})


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the app's OpenAPI schema, from packaged assets."""
    app, root = request.app, request.scope.get("root_path", "")
    return _with_csp(get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
        swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        swagger_ui_parameters=app.swagger_ui_parameters,
    ))


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page (kept for completeness of the UI)."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the app's OpenAPI schema, from packaged assets (no Google Fonts)."""
    app, root = request.app, request.scope.get("root_path", "")
    return _with_csp(get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        with_google_fonts=False,
    ))
