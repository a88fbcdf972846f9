"""The tutorial's wire contract, on both backends."""

from __future__ import annotations

import httpx
import pytest

from .conftest import create_hero

pytestmark = pytest.mark.anyio


async def test_create_returns_public_hero_without_secret(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/heroes/", json={"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30}
    )
    assert response.status_code == 200
    body = response.json()
    assert body == {"name": "Deadpond", "age": 30, "id": body["id"]}
    assert isinstance(body["id"], int)


async def test_create_ignores_client_supplied_id(client: httpx.AsyncClient) -> None:
    first = await create_hero(client, id=9999)
    second = await create_hero(client, name="Rusty-Man", id=first["id"])
    assert first["id"] != 9999
    assert second["id"] != first["id"]


async def test_create_without_age_stores_null(client: httpx.AsyncClient) -> None:
    hero = await create_hero(client)
    assert hero["age"] is None
    assert (await client.get(f"/heroes/{hero['id']}")).json()["age"] is None


async def test_read_one_hero(client: httpx.AsyncClient) -> None:
    hero = await create_hero(client, name="Spider-Boy", secret_name="Pedro Parqueador", age=16)
    response = await client.get(f"/heroes/{hero['id']}")
    assert response.status_code == 200
    assert response.json() == {"name": "Spider-Boy", "age": 16, "id": hero["id"]}


async def test_list_is_ordered_by_id_and_hides_secret(client: httpx.AsyncClient) -> None:
    created = [await create_hero(client, name=f"hero-{i}", age=i) for i in range(5)]
    response = await client.get("/heroes/")
    assert response.status_code == 200
    assert response.json() == created
    assert all("secret_name" not in hero for hero in response.json())


async def test_list_pages_are_stable_and_disjoint(client: httpx.AsyncClient) -> None:
    ids = [(await create_hero(client, name=f"h{i}"))["id"] for i in range(7)]
    # Updating rows moves them physically on PostgreSQL; an unordered query would reshuffle pages.
    await client.patch(f"/heroes/{ids[0]}", json={"age": 1})
    pages = [(await client.get(f"/heroes/?offset={o}&limit=3")).json() for o in (0, 3, 6)]
    assert [h["id"] for page in pages for h in page] == ids


async def test_list_default_limit_is_100(client: httpx.AsyncClient) -> None:
    for i in range(101):
        await create_hero(client, name=f"n{i}")
    assert len((await client.get("/heroes/")).json()) == 100
    assert len((await client.get("/heroes/?offset=100")).json()) == 1


async def test_list_filters_by_name_and_age_range(client: httpx.AsyncClient) -> None:
    a = await create_hero(client, name="Tarantula", age=32)
    b = await create_hero(client, name="Tarantula", age=50)
    await create_hero(client, name="Black Lion", age=35)
    await create_hero(client, name="Captain North America")
    named = (await client.get("/heroes/", params={"name": "Tarantula"})).json()
    assert named == [a, b]
    ranged = (await client.get("/heroes/", params={"age_min": 33, "age_max": 50})).json()
    assert [h["age"] for h in ranged] == [50, 35]
    both = (await client.get("/heroes/", params={"name": "Tarantula", "age_max": 40})).json()
    assert both == [a]


async def test_patch_changes_only_sent_fields(client: httpx.AsyncClient) -> None:
    hero = await create_hero(client, name="Deadpond", age=30)
    response = await client.patch(f"/heroes/{hero['id']}", json={"age": 31})
    assert response.status_code == 200
    assert response.json() == {"name": "Deadpond", "age": 31, "id": hero["id"]}


async def test_patch_with_nothing_to_change_returns_the_hero(client: httpx.AsyncClient) -> None:
    hero = await create_hero(client, age=30)
    response = await client.patch(f"/heroes/{hero['id']}", json={})
    assert response.status_code == 200
    assert response.json() == hero
    assert (await client.patch("/heroes/424242", json={})).status_code == 404


async def test_patch_can_clear_age(client: httpx.AsyncClient) -> None:
    hero = await create_hero(client, age=30)
    response = await client.patch(f"/heroes/{hero['id']}", json={"age": None})
    assert response.json()["age"] is None


async def test_patch_secret_name_is_stored_but_not_returned(client: httpx.AsyncClient) -> None:
    hero = await create_hero(client)
    response = await client.patch(f"/heroes/{hero['id']}", json={"secret_name": "New Identity"})
    assert response.status_code == 200
    assert "secret_name" not in response.json()
    assert "New Identity" not in response.text


async def test_patch_ignores_id_in_body(client: httpx.AsyncClient) -> None:
    hero = await create_hero(client)
    response = await client.patch(f"/heroes/{hero['id']}", json={"id": 12345, "name": "Renamed"})
    assert response.json() == {"name": "Renamed", "age": None, "id": hero["id"]}


async def test_delete_then_gone(client: httpx.AsyncClient) -> None:
    hero = await create_hero(client)
    response = await client.delete(f"/heroes/{hero['id']}")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert (await client.get(f"/heroes/{hero['id']}")).status_code == 404


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
@pytest.mark.parametrize("hero_id", ["0", "424242", "-1", "2147483648", "9" * 40])
async def test_unknown_id_is_404_on_every_method(
    client: httpx.AsyncClient, method: str, hero_id: str
) -> None:
    body = {"age": 1} if method == "PATCH" else None
    response = await client.request(method, f"/heroes/{hero_id}", json=body)
    assert response.status_code == 404
    assert response.json() == {"detail": "Hero not found"}


async def test_swagger_ui_and_openapi_are_served(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    schema = (await client.get("/openapi.json")).json()
    assert set(schema["paths"]) >= {"/heroes/", "/heroes/{hero_id}"}
    public = schema["components"]["schemas"]["HeroPublic"]
    assert "secret_name" not in public["properties"]
