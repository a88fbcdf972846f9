"""Hostile and careless inputs: each gets a clear 4xx, never a 5xx, and changes nothing.

Runs on both backends because SQLite accepts what PostgreSQL refuses (NUL bytes, huge integers,
negative LIMIT): a value must be rejected before it reaches either database.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import create_hero

pytestmark = pytest.mark.anyio

BIG = 2**63
VALID = {"name": "Valid", "secret_name": "Valid Secret"}

# (label, body) for POST /heroes/ -> 422
BAD_CREATE_BODIES: list[tuple[str, Any]] = [
    ("empty object", {}),
    ("missing secret_name", {"name": "x"}),
    ("missing name", {"secret_name": "x"}),
    ("null name", {**VALID, "name": None}),
    ("null secret_name", {**VALID, "secret_name": None}),
    ("empty name", {**VALID, "name": ""}),
    ("name too long", {**VALID, "name": "x" * 256}),
    ("multibyte name too long", {**VALID, "name": "\U0001f9b8" * 256}),
    ("secret too long", {**VALID, "secret_name": "s" * 256}),
    ("NUL in name", {**VALID, "name": "Dead\x00pond"}),
    ("NUL in secret", {**VALID, "secret_name": "\x00"}),
    ("lone surrogate", {**VALID, "name": "\ud800"}),
    ("name is number", {**VALID, "name": 12}),
    ("name is list", {**VALID, "name": ["a"]}),
    ("name is object", {**VALID, "name": {"a": 1}}),
    ("age is string", {**VALID, "age": "thirty"}),
    ("age is a numeric string", {**VALID, "age": "30"}),  # the schema says integer
    ("age is a boolean", {**VALID, "age": True}),
    ("age is float", {**VALID, "age": 1.5}),
    ("age negative", {**VALID, "age": -1}),
    ("age over int32", {**VALID, "age": 2**31}),
    ("age over int64", {**VALID, "age": BIG}),
    ("age huge", {**VALID, "age": 10**100}),
    ("age is list", {**VALID, "age": [1]}),
    ("body is list", [VALID]),
    ("body is string", "hero"),
    ("body is null", None),
    ("body is number", 7),
]

BAD_RAW_BODIES: list[tuple[str, bytes]] = [
    ("truncated json", b'{"name": "x", "secret_name": '),
    ("invalid utf-8", b'{"name": "\xff\xfe", "secret_name": "x"}'),
    ("not json", b"name=x&secret_name=y"),
    ("empty body", b""),
    ("NaN age", b'{"name": "x", "secret_name": "y", "age": NaN}'),
    ("Infinity age", b'{"name": "x", "secret_name": "y", "age": Infinity}'),
    ("deep nesting", b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b', "secret_name": "y"}'),
]

BAD_PATCH_BODIES: list[tuple[str, Any]] = [
    ("null name", {"name": None}),
    ("null secret_name", {"secret_name": None}),
    ("empty name", {"name": ""}),
    ("NUL in name", {"name": "a\x00b"}),
    ("lone surrogate", {"secret_name": "\udfff"}),
    ("age over int32", {"age": 2**31}),
    ("age negative", {"age": -5}),
    ("name too long", {"name": "n" * 1000}),
    ("body is list", [{"name": "x"}]),
]

BAD_QUERIES = [
    "offset=-1",
    "offset=9223372036854775808",
    f"offset={10**30}",
    "offset=abc",
    "limit=0",
    "limit=-1",
    "limit=101",
    f"limit={BIG}",
    "limit=1.5",
    "name=",
    "name=%00",
    "name=" + "x" * 256,
    "age_min=-1",
    f"age_max={2**31}",
    "age_min=young",
]

BAD_IDS = ["abc", "1.5", "1e3", "%00", "0x10", "true", " "]


async def _snapshot(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/heroes/")
    assert response.status_code == 200
    heroes: list[dict[str, Any]] = response.json()
    return heroes


def _json(body: Any) -> dict[str, Any]:
    # ASCII-escaped, so lone surrogates travel as the \\udXXX escapes a hostile client would send.
    return {"content": json.dumps(body), "headers": {"content-type": "application/json"}}


def _assert_clear_4xx(response: httpx.Response, *expected: int) -> None:
    assert response.status_code in expected, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    assert "detail" in response.json()


@pytest.mark.parametrize(
    ("label", "body"), BAD_CREATE_BODIES, ids=[b[0] for b in BAD_CREATE_BODIES]
)
async def test_bad_create_body_is_422(client: httpx.AsyncClient, label: str, body: Any) -> None:
    before = await _snapshot(client)
    response = await client.post("/heroes/", **_json(body))
    _assert_clear_4xx(response, 422)
    assert await _snapshot(client) == before


@pytest.mark.parametrize(("label", "raw"), BAD_RAW_BODIES, ids=[b[0] for b in BAD_RAW_BODIES])
async def test_malformed_create_body_is_422(
    client: httpx.AsyncClient, label: str, raw: bytes
) -> None:
    before = await _snapshot(client)
    response = await client.post(
        "/heroes/", content=raw, headers={"content-type": "application/json"}
    )
    # Undecodable bytes and pathological nesting are a 400 from FastAPI's body parser.
    _assert_clear_4xx(response, 400, 422)
    assert await _snapshot(client) == before


@pytest.mark.parametrize(("label", "body"), BAD_PATCH_BODIES, ids=[b[0] for b in BAD_PATCH_BODIES])
async def test_bad_patch_is_422_and_changes_nothing(
    client: httpx.AsyncClient, label: str, body: Any
) -> None:
    hero = await create_hero(client, age=40)
    response = await client.patch(f"/heroes/{hero['id']}", **_json(body))
    _assert_clear_4xx(response, 422)
    assert (await client.get(f"/heroes/{hero['id']}")).json() == hero


@pytest.mark.parametrize("query", BAD_QUERIES)
async def test_bad_list_query_is_422(client: httpx.AsyncClient, query: str) -> None:
    _assert_clear_4xx(await client.get(f"/heroes/?{query}"), 422)


@pytest.mark.parametrize("hero_id", BAD_IDS)
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_non_integer_id_is_422(client: httpx.AsyncClient, method: str, hero_id: str) -> None:
    body = {"age": 1} if method == "PATCH" else None
    response = await client.request(method, f"/heroes/{hero_id}", json=body)
    _assert_clear_4xx(response, 422, 404)


async def test_extreme_but_valid_values_round_trip(client: httpx.AsyncClient) -> None:
    name = "\U0001f9b8\u200d\u2640\ufe0f" + "é" * 250  # 255 characters, many bytes each
    hero = await create_hero(client, name=name, secret_name="\t\n\r" + "s" * 252, age=2**31 - 1)
    assert (await client.get(f"/heroes/{hero['id']}")).json() == hero
    page = await client.get("/heroes/", params={"offset": 2**63 - 1, "limit": 100})
    assert page.json() == []


async def test_wrong_content_type_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/heroes/", content=json.dumps(VALID), headers={"content-type": "text/plain"}
    )
    _assert_clear_4xx(response, 422)


async def test_oversized_body_is_413_with_or_without_length(client: httpx.AsyncClient) -> None:
    big = json.dumps({**VALID, "name": "x" * 70_000}).encode()
    declared = await client.post(
        "/heroes/", content=big, headers={"content-type": "application/json"}
    )
    _assert_clear_4xx(declared, 413)

    async def chunks() -> Any:
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    streamed = await client.post(
        "/heroes/", content=chunks(), headers={"content-type": "application/json"}
    )
    _assert_clear_4xx(streamed, 413)
    assert await _snapshot(client) == []


async def test_unknown_method_and_path(client: httpx.AsyncClient) -> None:
    assert (await client.put("/heroes/1", json=VALID)).status_code == 405
    assert (await client.get("/villains/")).status_code == 404


async def test_an_integral_float_is_an_integer_age(client: httpx.AsyncClient) -> None:
    # 30.0 is an integer in JSON Schema: generated clients may send it.
    hero = await create_hero(client, age=30.0)
    assert hero["age"] == 30
    assert isinstance(hero["age"], int)
