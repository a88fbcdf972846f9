"""Optional bearer tokens: writes need one when configured, reads stay open unless asked."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from heroes.api.security import token_is_valid
from heroes.config import Settings

pytestmark = pytest.mark.anyio

OLD = "old-token-0123456789abcdef"
NEW = "new-token-fedcba9876543210"
HERO = {"name": "Deadpond", "secret_name": "Dive Wilson"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_tokens": [SecretStr(OLD), SecretStr(NEW)]})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong-token-0123456789"), {"Authorization": OLD}, bearer(""), bearer(OLD[:-1])],
    ids=["none", "wrong", "no-scheme", "empty", "prefix"],
)
async def test_writes_without_a_valid_token_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/heroes/", json=HERO, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert (await client.patch("/heroes/1", json={"age": 1}, headers=headers)).status_code == 401
    assert (await client.delete("/heroes/1", headers=headers)).status_code == 401
    assert (await client.get("/heroes/")).json() == []


@pytest.mark.parametrize("token", [OLD, NEW], ids=["current", "next"])
async def test_every_configured_token_is_accepted_for_rotation(
    client: httpx.AsyncClient, token: str
) -> None:
    created = await client.post("/heroes/", json=HERO, headers=bearer(token))
    assert created.status_code == 200
    hero_id = created.json()["id"]
    patched = await client.patch(f"/heroes/{hero_id}", json={"age": 3}, headers=bearer(token))
    assert patched.status_code == 200
    assert (await client.delete(f"/heroes/{hero_id}", headers=bearer(token))).status_code == 200


async def test_reads_stay_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/heroes/")).status_code == 200
    assert (await client.get("/heroes/1")).status_code == 404


class TestProtectedReads:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"auth_protect_reads": True})

    async def test_reads_need_a_token(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/heroes/")).status_code == 401
        assert (await client.get("/heroes/1")).status_code == 401
        assert (await client.get("/heroes/", headers=bearer(NEW))).status_code == 200
        assert (await client.get("/health/live")).status_code == 200


def test_token_check_needs_bearer_scheme_and_exact_match() -> None:
    tokens = (OLD.encode(),)
    assert token_is_valid(f"Bearer {OLD}", tokens)
    assert token_is_valid(f"bearer {OLD}", tokens)
    assert not token_is_valid(f"Basic {OLD}", tokens)
    assert not token_is_valid(None, tokens)
    assert not token_is_valid("Bearer ", (b"",))
