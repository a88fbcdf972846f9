"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served entirely by the app.

FastAPI's own pages load their JavaScript and CSS from a CDN, a favicon from fastapi.tiangolo.com
and (ReDoc) Google Fonts: blank pages where the network is closed. Here every asset comes from
the hash-locked ``fastapi-offline`` package (Swagger UI from swagger-ui-dist, ReDoc's standalone
bundle, a favicon), served under ``/docs/static/`` from the installed package's files, and
a Content-Security-Policy tells the browser to load nothing from anywhere else (ReDoc's bundle
would fetch the Redocly logo from cdn.redoc.ly; the policy stops it, the logo hides itself).
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import FileResponse, HTMLResponse, Response

ASSETS_PACKAGE = "fastapi_offline"
STATIC_PREFIX = "/docs/static"
#: The only files served: the directory is never listed, nothing else in it is reachable.
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
#: Assets change only with the package version (a new image): let browsers keep them a day.
CACHE_CONTROL = "public, max-age=86400"

SWAGGER_UI_PARAMETERS = {
    # The default validator badge loads an image from validator.swagger.io.
    "validatorUrl": None,
    # Keep the token given in "Authorize" across reloads of the page (in the browser only).
    "persistAuthorization": True,
}


INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(html: str) -> str:
    """Everything from this origin only; the page's inline script by its hash. Both UIs inject
    styles, ReDoc runs its search in a worker built from a blob, both draw icons as data: URLs
    (deploy/scripts/browser-test.sh fails on any violation but a foreign image's)."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self'{hashes}; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
        "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; "
        "form-action 'self'"
    )


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = content_security_policy(bytes(page.body).decode())
    return page


def asset_dir() -> Path:
    return Path(str(files(ASSETS_PACKAGE) / "static"))


def add_docs(app: FastAPI, openapi_url: str) -> None:
    """Add ``/docs``, ``/redoc`` and their assets; nothing at all when not called."""
    directory = asset_dir()
    missing = [name for name in ASSETS if not (directory / name).is_file()]
    if missing:  # an incomplete install shows up at start-up, not as a blank page later
        raise RuntimeError(f"API docs assets missing from {directory}: {', '.join(missing)}")
    title = app.title

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_PREFIX}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
        return _with_policy(page)

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_PREFIX}/favicon.png",
            with_google_fonts=False,
        )
        return _with_policy(page)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise HTTPException(status_code=404, detail="Not Found")
        return FileResponse(directory / name, headers={"Cache-Control": CACHE_CONTROL})

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    app.add_route(STATIC_PREFIX + "/{name}", asset, include_in_schema=False)
