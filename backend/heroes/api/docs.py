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
from typing import Any

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


#: What the proxy in front of the API answers itself (deploy/haproxy/haproxy.cfg): a client's
#: rate limit (429) and load shedding (503). Documented on every operation but the health
#: checks, which are never limited or shed.
EDGE_UNLIMITED_TAGS = frozenset({"health"})
_SECONDS = {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}
EDGE_ANSWERS: dict[str, dict[str, Any]] = {
    "429": {
        "description": "Too many requests from this client (the proxy's rate limits): wait "
        "Retry-After seconds",
        "headers": {
            "Retry-After": _SECONDS,
            "RateLimit-Policy": {
                "description": 'The limits (IETF httpapi RateLimit fields): `"client";q=100;w=1, '
                '"address";q=300;w=1` = 100 requests per second per token (or address, without '
                "one), 300 per address. Also sent on every answer under the limits",
                "schema": {"type": "string"},
            },
            "RateLimit": {
                "description": 'What is left: `"client";r=0;t=1` = 0 requests left, for 1 '
                "second. Also sent on every answer under the limits",
                "schema": {"type": "string"},
            },
        },
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}},
    },
    "503": {
        "description": "Database unavailable, or the service is overloaded (the proxy refuses "
        "at once what it could not serve soon); try again after Retry-After seconds",
        "headers": {"Retry-After": _SECONDS},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}},
    },
}
EDGE_DESCRIPTION = """
**Rate limits and overload**: the proxy in front of the API answers `429` to a client over its
rate limit and `503` when the service is overloaded, both with `Retry-After` (seconds) and a
JSON `detail`; every limited answer carries `RateLimit-Policy` and `RateLimit`
(draft-ietf-httpapi-ratelimit-headers).
"""


def add_edge_answers(app: FastAPI) -> None:
    """Document the proxy's own answers (``EDGE_ANSWERS``) in the app's OpenAPI document, on every
    operation (FastAPI's "extending OpenAPI" idiom: ``app.openapi`` replaced, its result
    cached). A 503 the operation documents already keeps its own body schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        document["info"]["description"] = document["info"].get("description", "") + EDGE_DESCRIPTION
        for item in document.get("paths", {}).values():
            for operation in item.values():
                if EDGE_UNLIMITED_TAGS & set(operation.get("tags", [])):
                    continue
                responses = operation.setdefault("responses", {})
                for status, answer in EDGE_ANSWERS.items():
                    previous = responses.get(status, {})
                    responses[status] = {
                        **answer,
                        **previous,
                        "description": answer["description"],
                        "headers": {**answer["headers"], **previous.get("headers", {})},
                    }
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
