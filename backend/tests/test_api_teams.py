"""A second resource served by the same app factory (tests/teams: models, queries, router):
the same behaviour as the heroes' on both backends, with one line to include its router."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine

from heroes.config import Settings

from .conftest import asgi_client, create_hero, running_app
from .teams import api as team_routes
from .teams.models import TeamsModel

pytestmark = pytest.mark.anyio

TEAM = {"name": "Preventers", "headquarters": "Sharp Tower"}


@pytest.fixture
def team_table(settings: Settings) -> Iterator[Settings]:
    """The team table (a real resource has its migration; this one is the tests' own)."""
    engine = create_engine(settings.sync_url)
    TeamsModel.metadata.create_all(engine)
    try:
        yield settings
    finally:
        TeamsModel.metadata.drop_all(engine)
        engine.dispose()


@pytest.fixture
async def client(team_table: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(team_table) as app:
        app.include_router(team_routes.router(team_table))  # the one line
        async with asgi_client(app) as http:
            yield http


async def test_create_read_update_delete(client: httpx.AsyncClient) -> None:
    created = await client.post("/teams/", json=TEAM)
    assert created.status_code == 200
    team = created.json()
    assert team == {**TEAM, "id": 1}
    assert (await client.get("/teams/1")).json() == team
    assert (await client.get("/teams/")).json() == [team]
    patched = await client.patch("/teams/1", json={"headquarters": "Sister Margaret's Bar"})
    assert patched.json() == {**team, "headquarters": "Sister Margaret's Bar"}
    assert (await client.delete("/teams/1")).json() == {"ok": True}
    assert (await client.get("/teams/")).json() == []


async def test_unknown_team_is_a_404_of_its_own(client: httpx.AsyncClient) -> None:
    for response in [
        await client.get("/teams/7"),
        await client.patch("/teams/7", json={"name": "x"}),
        await client.delete("/teams/7"),
        await client.get("/teams/99999999999"),
    ]:
        assert response.status_code == 404
        assert response.json() == {"detail": "Team not found"}
    assert (await client.get("/heroes/7")).json() == {"detail": "Hero not found"}


async def test_invalid_body_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/teams/", json={"name": ""})
    assert response.status_code == 422
    assert {error["loc"][-1] for error in response.json()["detail"]} == {"name", "headquarters"}


async def test_idempotency_key_replays_the_answer(client: httpx.AsyncClient) -> None:
    first = await client.post("/teams/", json=TEAM, headers={"Idempotency-Key": "t1"})
    again = await client.post("/teams/", json=TEAM, headers={"Idempotency-Key": "t1"})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    other = await client.post(
        "/teams/", json={**TEAM, "name": "Z"}, headers={"Idempotency-Key": "t1"}
    )
    assert other.status_code == 422
    assert len((await client.get("/teams/")).json()) == 1


async def test_heroes_are_served_beside_teams(client: httpx.AsyncClient) -> None:
    hero = await create_hero(client)
    assert (await client.get(f"/heroes/{hero['id']}")).json() == hero


async def test_the_openapi_document_describes_teams_like_heroes(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    assert paths["/teams/{team_id}"]["get"]["operationId"] == "read_team_teams__team_id__get"
    assert paths["/teams/"]["post"]["operationId"] == "create_team_teams__post"
    one = paths["/teams/{team_id}"]["get"]["responses"]
    assert one["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TeamPublic"
    }
    assert one["404"]["description"] == "Team not found"
    assert {"400", "413", "503"} <= set(one)
    [header] = paths["/teams/"]["post"]["parameters"]
    assert header["name"] == "Idempotency-Key"
    assert set(document["components"]["schemas"]["TeamPublic"]["properties"]) == {
        "name", "headquarters", "id"
    }  # fmt: skip
    assert paths["/teams/"]["get"]["tags"] == ["teams"]


async def test_writes_need_a_token_when_tokens_are_configured(team_table: Settings) -> None:
    token = "teams-token-0123456789"
    protected = team_table.model_copy(update={"api_tokens": [SecretStr(token)]})
    async with running_app(protected) as app:
        app.include_router(team_routes.router(protected))
        async with asgi_client(app) as http:
            assert (await http.post("/teams/", json=TEAM)).status_code == 401
            auth = {"Authorization": f"Bearer {token}"}
            assert (await http.post("/teams/", json=TEAM, headers=auth)).status_code == 200
            assert (await http.get("/teams/1")).status_code == 200
