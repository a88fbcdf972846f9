"""405 for a method a path does not take, with an ``Allow`` header naming all that it does."""

from __future__ import annotations

import pytest

from heroes.config import Settings
from heroes.main import create_app

from .conftest import asgi_client

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/heroes/1", "DELETE, GET, PATCH"),
        ("POST", "/heroes/1", "DELETE, GET, PATCH"),
        ("TRACE", "/heroes/1", "DELETE, GET, PATCH"),
        ("PUT", "/heroes/", "GET, POST"),
        ("DELETE", "/heroes/", "GET, POST"),
        ("POST", "/health/ready", "GET"),
    ],
)
async def test_405_lists_every_method_of_the_path(method: str, path: str, allow: str) -> None:
    app = create_app(Settings(database_url="sqlite:///unused.db"))
    async with asgi_client(app) as client:  # no database: the route never reaches it
        response = await client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json() == {"detail": "Method Not Allowed"}
