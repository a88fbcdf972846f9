"""/docs and /redoc: every asset from the app itself, nothing at all with DOCS_ENABLED=false.

(The browser test, deploy/scripts/browser-test.sh, renders them in Chromium with no network.)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from heroes.api import docs
from heroes.config import Settings
from heroes.main import create_app

from .conftest import asgi_client

pytestmark = pytest.mark.anyio

#: Every URL a page refers to: <link href>, <script src>, and the schema's url.
REFERENCES = re.compile(r"""(?:href|src)="([^"]+)"|url: '([^']+)'|spec-url="([^"]+)\"""")
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def settings(**overrides: object) -> Settings:
    return Settings(database_url="sqlite:///unused.db", **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(create_app(settings())) as http:  # no database needed
        yield http


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_pages_refer_only_to_the_apps_own_paths(client: httpx.AsyncClient, page: str) -> None:
    html = (await client.get(page)).text
    urls = [next(group for group in match if group) for match in REFERENCES.findall(html)]
    assert urls, html
    assert [url for url in urls if not url.startswith("/")] == []
    assert "fonts.googleapis" not in html
    assert "tiangolo" not in html
    for url in urls:
        assert (await client.get(url)).status_code == 200, url


async def test_swagger_ui_shows_no_validator_badge_from_an_outside_host(
    client: httpx.AsyncClient,
) -> None:
    assert '"validatorUrl": null' in (await client.get("/docs")).text


@pytest.mark.parametrize("name", docs.ASSETS)
async def test_each_asset_is_the_packages_file_with_its_type_and_cache_header(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(f"/docs/static/{name}")
    assert response.status_code == 200
    assert response.content == (docs.asset_dir() / name).read_bytes()
    assert response.headers["content-type"].startswith(TYPES[Path(name).suffix])
    assert response.headers["cache-control"] == docs.CACHE_CONTROL
    assert len(response.content) > 1000


@pytest.mark.parametrize(
    "path", ["/docs/static/", "/docs/static/RECORD", "/docs/static/..%2F__init__.py"]
)
async def test_nothing_else_of_the_package_is_served(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


@pytest.mark.parametrize(
    "path", ["/docs", "/redoc", "/openapi.json", "/docs/static/swagger-ui-bundle.js"]
)
async def test_docs_disabled_removes_pages_assets_and_schema(path: str) -> None:
    async with asgi_client(create_app(settings(docs_enabled=False))) as http:
        assert (await http.get(path)).status_code == 404


def test_a_missing_asset_fails_at_start_up_not_as_a_blank_page(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in docs.ASSETS[1:]:
        (tmp_path / name).write_text("x")
    monkeypatch.setattr(docs, "asset_dir", lambda: tmp_path)
    with pytest.raises(RuntimeError, match=r"swagger-ui-bundle\.js"):
        create_app(settings())


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_browser_is_told_to_load_nothing_from_elsewhere(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    assert policy["connect-src"] == "'self'"
    # The inline script (Swagger UI's configuration) is allowed by its hash, nothing else inline.
    scripts = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    assert policy["script-src"].count("'sha256-") == len(scripts)
    assert "unsafe" not in policy["script-src"]
