"""Cursor pages on GET /heroes/, on both backends: the Link header, walking by cursor, filters
carried along, offset unchanged, and hostile cursors refused with a 400."""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from heroes.domain.pagination import encode_cursor

from .conftest import create_hero

pytestmark = pytest.mark.anyio

LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


def next_url(response: httpx.Response) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    match = LINK.match(link)
    assert match, link
    return match["url"]


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


async def seed(client: httpx.AsyncClient, count: int, **fields: Any) -> list[dict[str, Any]]:
    return [await create_hero(client, name=f"Hero {n}", age=n, **fields) for n in range(count)]


async def walk(client: httpx.AsyncClient, url: str) -> tuple[list[dict[str, Any]], int]:
    """Every hero reached by following Link from ``url``; and the number of pages."""
    heroes: list[dict[str, Any]] = []
    pages = 0
    next_page: str | None = url
    while next_page is not None:
        response = await client.get(next_page)
        assert response.status_code == 200, response.text
        heroes += response.json()
        pages += 1
        next_page = next_url(response)
        assert pages < 100
    return heroes, pages


async def test_a_page_with_more_after_it_links_to_the_next(client: httpx.AsyncClient) -> None:
    heroes = await seed(client, 5)
    response = await client.get("/heroes/?limit=2")
    assert response.json() == heroes[:2]
    url = next_url(response)
    assert url is not None
    assert urlsplit(url).path == "/heroes/"
    assert query_of(url)["limit"] == ["2"]
    assert "offset" not in query_of(url)


async def test_walking_the_cursor_reaches_every_hero_once_in_order(
    client: httpx.AsyncClient,
) -> None:
    heroes = await seed(client, 7)
    walked, pages = await walk(client, "/heroes/?limit=3")
    assert walked == heroes
    assert pages == 3


async def test_an_exactly_full_last_page_has_no_link(client: httpx.AsyncClient) -> None:
    await seed(client, 4)
    walked, pages = await walk(client, "/heroes/?limit=2")
    assert len(walked) == 4
    assert pages == 2
    assert next_url(await client.get("/heroes/?limit=4")) is None


async def test_no_link_when_everything_fits(client: httpx.AsyncClient) -> None:
    await seed(client, 3)
    assert "link" not in (await client.get("/heroes/")).headers
    assert "link" not in (await client.get("/heroes/?limit=3")).headers
    empty = await client.get("/heroes/?name=nobody")
    assert empty.json() == []
    assert "link" not in empty.headers


async def test_an_offset_page_links_to_the_next_by_cursor(client: httpx.AsyncClient) -> None:
    heroes = await seed(client, 6)
    response = await client.get("/heroes/?offset=1&limit=2")
    assert response.json() == heroes[1:3]
    url = next_url(response)
    assert url is not None
    assert "offset" not in query_of(url)
    walked, _ = await walk(client, url)
    assert walked == heroes[3:]


async def test_offset_and_limit_work_as_in_the_tutorial(client: httpx.AsyncClient) -> None:
    heroes = await seed(client, 5)
    assert (await client.get("/heroes/?offset=2&limit=2")).json() == heroes[2:4]
    assert (await client.get("/heroes/?offset=4")).json() == heroes[4:]
    assert (await client.get("/heroes/?offset=10")).json() == []


async def test_the_default_limit_is_carried_into_the_link(client: httpx.AsyncClient) -> None:
    await seed(client, 101)
    response = await client.get("/heroes/")
    assert len(response.json()) == 100
    url = next_url(response)
    assert url is not None
    assert query_of(url)["limit"] == ["100"]
    assert len((await client.get(url)).json()) == 1


async def test_filters_are_carried_into_the_link(client: httpx.AsyncClient) -> None:
    name = "Spider & Boy / é?=#"
    for n in range(6):
        await create_hero(client, name=name, age=n)
        await create_hero(client, name="Other", age=n)
    response = await client.get(
        "/heroes/", params={"name": name, "age_min": 1, "age_max": 4, "limit": 1}
    )
    url = next_url(response)
    assert url is not None
    assert query_of(url) == {
        "limit": ["1"], "name": [name], "age_min": ["1"], "age_max": ["4"],
        "cursor": query_of(url)["cursor"],
    }  # fmt: skip
    walked, pages = await walk(client, url)
    everything = response.json() + walked
    assert [h["age"] for h in everything] == [1, 2, 3, 4]
    assert {h["name"] for h in everything} == {name}
    assert pages == 3  # 2, 3, then 4 with nothing after it


async def test_rows_deleted_or_added_between_pages_shift_nothing(
    client: httpx.AsyncClient,
) -> None:
    heroes = await seed(client, 6)
    first = await client.get("/heroes/?limit=2")
    url = next_url(first)
    assert url is not None
    await client.delete(f"/heroes/{heroes[0]['id']}")  # before the cursor: offset would skip
    added = await create_hero(client, name="Late")
    walked, _ = await walk(client, url)
    assert walked == [*heroes[2:], added]


async def test_a_cursor_after_the_last_hero_is_an_empty_last_page(
    client: httpx.AsyncClient,
) -> None:
    heroes = await seed(client, 2)
    response = await client.get("/heroes/", params={"cursor": encode_cursor(heroes[-1]["id"])})
    assert response.status_code == 200
    assert response.json() == []
    assert "link" not in response.headers


async def test_cursor_and_offset_together_are_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/heroes/", params={"cursor": encode_cursor(1), "offset": 1})
    assert response.status_code == 400
    assert response.json() == {"detail": "Send either cursor or offset, not both"}
    with_zero = await client.get("/heroes/", params={"cursor": encode_cursor(1), "offset": 0})
    assert with_zero.status_code == 200


# --- hostile cursors --------------------------------------------------------------------------


def _raw(payload: bytes, check: bytes | None = None) -> str:
    if check is None:
        check = hashlib.blake2b(payload, digest_size=6, key=b"heroes.cursor").digest()
    return base64.urlsafe_b64encode(payload + check).decode()


VALID = encode_cursor(5)
BAD_CURSORS = [
    ("empty", ""),
    ("garbage", "not-a-cursor"),
    ("truncated", VALID[:-1]),
    ("too long", VALID + "A"),
    ("huge", "A" * 10_000),
    ("flipped character", ("B" if VALID[3] != "B" else "C").join([VALID[:3], VALID[4:]])),
    ("standard base64 alphabet", VALID.replace("-", "+").replace("_", "/") + "+"),
    ("padding", VALID[:-2] + "=="),
    ("non-ascii", "é" * 20),
    ("NUL", "\x00" * 20),
    ("forged without checksum", _raw(struct.pack(">BQ", 1, 3), b"\x00" * 6)),
    ("wrong version", _raw(struct.pack(">BQ", 2, 3))),
    ("id beyond int32", _raw(struct.pack(">BQ", 1, 2**31))),
    ("id beyond int64", _raw(struct.pack(">BQ", 1, 2**64 - 1))),
    ("sql", "1 OR 1=1; DROP TABLE hero"),
]


@pytest.mark.parametrize(("label", "cursor"), BAD_CURSORS, ids=[label for label, _ in BAD_CURSORS])
async def test_hostile_cursors_are_400(client: httpx.AsyncClient, label: str, cursor: str) -> None:
    await seed(client, 2)
    response = await client.get("/heroes/", params={"cursor": cursor})
    assert response.status_code == 400, (label, response.text)
    assert response.json()["detail"].startswith("Invalid cursor")


async def test_a_cursor_is_opaque_and_short(client: httpx.AsyncClient) -> None:
    await seed(client, 3)
    url = next_url(await client.get("/heroes/?limit=1"))
    assert url is not None
    [cursor] = query_of(url)["cursor"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", cursor)


async def test_openapi_documents_cursor_and_link(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/heroes/"]["get"]
    [cursor] = [p for p in operation["parameters"] if p["name"] == "cursor"]
    assert cursor["in"] == "query"
    assert "Link" in operation["responses"]["200"]["headers"]
    assert "400" in operation["responses"]
