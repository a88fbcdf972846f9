"""Idempotency-Key on the write routes, on both backends: replay, conflicts, scoping, expiry,
and that the answer and the write commit together or not at all."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, insert, select

from heroes.config import Settings
from heroes.db import Session
from heroes.domain import crud, idempotency
from heroes.errors import ConnectionLost

from .conftest import asgi_client, create_hero, running_app

pytestmark = pytest.mark.anyio

BODY = {"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30}
REPLAYED = "idempotent-replayed"


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def names(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/heroes/", params={"limit": 100})
    return [hero["name"] for hero in response.json()]


async def stored_answers(app: FastAPI) -> list[dict[str, Any]]:
    rows = await Session(app.state.db).fetch_all(select(idempotency.KEY))
    return [dict(row) for row in rows]


async def post(client: httpx.AsyncClient, value: str, body: Any = BODY) -> httpx.Response:
    return await client.post("/heroes/", json=body, headers=key(value))


class Stall:
    """Holds the first call of a crud function (before it runs, or after) until released: a
    request caught in the middle of its transaction."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, *, after: bool = False) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        real: Callable[..., Awaitable[Any]] = getattr(crud, name)

        async def stalled(**kwargs: Any) -> Any:
            first = not self.entered.is_set()
            self.entered.set()
            result = await real(**kwargs) if after else None
            if first:
                await self.release.wait()
            return result if after else await real(**kwargs)

        monkeypatch.setattr(crud, name, stalled)


# --- first request, replay ------------------------------------------------------------------


async def test_retry_replays_the_first_answer_and_writes_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    first = await post(client, "8e03978e-40d5-43e8-bc93-6894a57f9324")
    assert first.status_code == 200
    assert REPLAYED not in first.headers
    assert first.content == orjson.dumps(first.json())  # the same JSON text as without a key
    again = await post(client, "8e03978e-40d5-43e8-bc93-6894a57f9324")
    assert again.status_code == 200
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content
    assert again.headers["content-type"] == "application/json"
    assert await names(client) == ["Deadpond"]
    [answer] = await stored_answers(app)
    assert answer["key"] == "8e03978e-40d5-43e8-bc93-6894a57f9324"
    assert json.loads(answer["body"]) == first.json()


async def test_a_keyed_answer_is_the_same_json_text_as_an_unkeyed_one(
    client: httpx.AsyncClient,
) -> None:
    name = 'Dr. "Q" \\ é \U0001f9b8 \n\t\x01\x7f </script>'
    keyed = await post(client, "k1", {**BODY, "name": name, "age": None})
    again = await post(client, "k1", {**BODY, "name": name, "age": None})
    assert keyed.json()["name"] == name
    assert keyed.content == again.content == orjson.dumps(keyed.json())


async def test_without_the_header_every_post_writes(client: httpx.AsyncClient) -> None:
    first = await client.post("/heroes/", json=BODY)
    second = await client.post("/heroes/", json=BODY)
    assert first.status_code == second.status_code == 200
    assert REPLAYED not in second.headers
    assert second.json()["id"] == first.json()["id"] + 1


async def test_keys_are_distinct(client: httpx.AsyncClient) -> None:
    a = await post(client, "key-a")
    b = await post(client, "key-b")
    assert a.json()["id"] != b.json()["id"]
    assert await names(client) == ["Deadpond", "Deadpond"]


async def test_quoted_structured_field_string_is_the_same_key(client: httpx.AsyncClient) -> None:
    first = await post(client, '"abc-123"')
    again = await post(client, "abc-123")
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()


async def test_same_request_spelled_differently_is_the_same_request(
    client: httpx.AsyncClient,
) -> None:
    first = await post(client, "k1")
    spaced = b'{ "age" : 30, "secret_name": "Dive Wilson",\n "name": "Deadpond" }'
    again = await client.post(
        "/heroes/", content=spaced, headers={**key("k1"), "content-type": "application/json"}
    )
    assert again.status_code == 200
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()


# --- conflicts ------------------------------------------------------------------------------


async def test_same_key_different_body_is_422_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await post(client, "k1")
    other = await post(client, "k1", {**BODY, "name": "Rusty-Man"})
    assert other.status_code == 422
    assert other.json() == {"detail": "This Idempotency-Key was used for a different request"}
    assert await names(client) == ["Deadpond"]


async def test_same_key_on_another_route_is_422(client: httpx.AsyncClient) -> None:
    hero = (await post(client, "k1")).json()
    patch = await client.patch(f"/heroes/{hero['id']}", json={"age": 1}, headers=key("k1"))
    assert patch.status_code == 422
    delete = await client.delete(f"/heroes/{hero['id']}", headers=key("k1"))
    assert delete.status_code == 422
    assert (await client.get(f"/heroes/{hero['id']}")).json()["age"] == 30


async def test_retry_while_the_first_is_in_flight_is_409(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    stall = Stall(monkeypatch, "create_hero")
    first = asyncio.create_task(post(client, "k1"))
    await asyncio.wait_for(stall.entered.wait(), 5)
    overtaking = await post(client, "k1")
    assert overtaking.status_code == 409
    assert overtaking.headers["retry-after"] == "1"
    stall.release.set()
    assert (await first).status_code == 200
    again = await post(client, "k1")
    assert again.headers[REPLAYED] == "true"
    assert await names(client) == ["Deadpond"]


async def test_a_duplicate_in_another_worker_waits_for_the_first_and_replays_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two app instances = two workers with their own pools. The first has claimed the key and
    is held before its write; the duplicate waits for the first's transaction (the key's row
    lock; on SQLite the write lock), then replays its answer."""
    stall = Stall(monkeypatch, "create_hero")
    async with (
        running_app(settings) as one,
        running_app(settings) as two,
        asgi_client(one) as first_worker,
        asgi_client(two) as second_worker,
    ):
        first = asyncio.create_task(post(first_worker, "k1"))
        await asyncio.wait_for(stall.entered.wait(), 5)
        duplicate = asyncio.create_task(post(second_worker, "k1"))
        await asyncio.sleep(0.2)
        assert not duplicate.done()
        stall.release.set()
        original, replayed = await first, await duplicate
        assert original.status_code == replayed.status_code == 200
        assert REPLAYED not in original.headers
        assert replayed.headers[REPLAYED] == "true"
        assert replayed.content == original.content
        assert await names(first_worker) == ["Deadpond"]


async def test_bursts_of_duplicates_on_two_workers_write_once(settings: Settings) -> None:
    async with (
        running_app(settings) as one,
        running_app(settings) as two,
        asgi_client(one) as first_worker,
        asgi_client(two) as second_worker,
    ):
        answers = await asyncio.gather(
            *(post(worker, "burst") for worker in (first_worker, second_worker) * 6)
        )
        assert {a.status_code for a in answers} <= {200, 409}
        assert len({a.content for a in answers if a.status_code == 200}) == 1
        assert await names(first_worker) == ["Deadpond"]


async def test_a_burst_of_duplicates_writes_once(client: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(*(post(client, "burst") for _ in range(12)))
    assert {a.status_code for a in answers} <= {200, 409}
    bodies = {a.content for a in answers if a.status_code == 200}
    assert len(bodies) == 1
    assert await names(client) == ["Deadpond"]


# --- atomicity: the answer and the write commit together --------------------------------------


def fail_at(monkeypatch: pytest.MonkeyPatch, app: FastAPI, *, after: bool) -> None:
    """Make a keyed write fail once around its commit: before it (the answer's INSERT fails: the
    worker died mid-transaction), or, with ``after``, once the transaction has committed (the
    connection broke before the client was answered)."""
    db = app.state.db
    real_run, real_transaction = db.run, db.transaction
    failed: list[str] = []

    async def run(conn: Any, sql: str, params: Any, *, rows: bool) -> Any:
        if not after and not failed and sql.startswith("INSERT INTO idempotency_key"):
            failed.append(sql)
            raise RuntimeError("the worker died before the commit")
        return await real_run(conn, sql, params, rows=rows)

    @asynccontextmanager
    async def transaction(conn: Any) -> AsyncIterator[None]:
        async with real_transaction(conn):
            yield
        if after and not failed:
            failed.append("COMMIT")
            raise ConnectionLost("the connection broke after the commit")

    monkeypatch.setattr(db, "run", run)
    monkeypatch.setattr(db, "transaction", transaction)


async def test_a_crash_before_commit_keeps_neither_the_write_nor_the_key(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_at(monkeypatch, app, after=False)
    assert (await post(client, "k1")).status_code == 500
    assert await names(client) == []
    assert await stored_answers(app) == []
    retry = await post(client, "k1")
    assert retry.status_code == 200
    assert REPLAYED not in retry.headers
    assert await names(client) == ["Deadpond"]


async def test_an_answer_lost_after_commit_is_replayed_to_the_retry(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_at(monkeypatch, app, after=True)
    assert (await post(client, "k1")).status_code == 503
    retry = await post(client, "k1")
    assert retry.status_code == 200
    assert retry.headers[REPLAYED] == "true"
    assert await names(client) == ["Deadpond"]
    assert retry.json()["name"] == "Deadpond"


async def test_failed_requests_leave_no_key(client: httpx.AsyncClient) -> None:
    missing = await client.delete("/heroes/1", headers=key("del-1"))
    assert missing.status_code == 404
    invalid = await post(client, "k2", {"name": ""})
    assert invalid.status_code == 422
    await create_hero(client)
    assert (await client.delete("/heroes/1", headers=key("del-1"))).status_code == 200
    assert (await post(client, "k2")).status_code == 200


# --- PATCH and DELETE -------------------------------------------------------------------------


async def test_patch_retry_does_not_undo_a_later_change(client: httpx.AsyncClient) -> None:
    hero = await create_hero(client, age=1)
    path = f"/heroes/{hero['id']}"
    first = await client.patch(path, json={"age": 2}, headers=key("p1"))
    await client.patch(path, json={"age": 3})
    again = await client.patch(path, json={"age": 2}, headers=key("p1"))
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json() == {**hero, "age": 2}
    assert (await client.get(path)).json()["age"] == 3


async def test_a_failing_write_under_a_key_used_for_another_request_is_422(
    client: httpx.AsyncClient,
) -> None:
    await post(client, "k1")
    response = await client.delete("/heroes/999", headers=key("k1"))
    assert response.status_code == 422


async def test_delete_retry_replays_ok_instead_of_404(client: httpx.AsyncClient) -> None:
    hero = await create_hero(client)
    path = f"/heroes/{hero['id']}"
    first = await client.delete(path, headers=key("d1"))
    again = await client.delete(path, headers=key("d1"))
    assert first.json() == again.json() == {"ok": True}
    assert again.headers[REPLAYED] == "true"
    assert (await client.delete(path)).status_code == 404


# --- scope: keys belong to the caller's token ---------------------------------------------------

TOKENS = ["token-one-0123456789abcdef", "token-two-0123456789abcdef"]


@pytest.fixture
async def secured(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    with_tokens = Settings(
        database_url=settings.database_url, environment="development", api_tokens=TOKENS
    )
    async with running_app(with_tokens) as app, asgi_client(app) as client:
        yield app, client


async def test_keys_are_scoped_to_the_token_and_the_token_is_not_stored(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = secured
    one = {"Authorization": f"Bearer {TOKENS[0]}", **key("shared")}
    two = {"Authorization": f"Bearer {TOKENS[1]}", **key("shared")}
    first = await client.post("/heroes/", json=BODY, headers=one)
    other = await client.post("/heroes/", json=BODY, headers=two)
    again = await client.post("/heroes/", json=BODY, headers=one)
    assert first.status_code == other.status_code == again.status_code == 200
    assert other.json()["id"] != first.json()["id"]
    assert REPLAYED not in other.headers
    assert again.headers[REPLAYED] == "true"
    assert again.json() == first.json()
    answers = await stored_answers(app)
    assert {a["scope"] for a in answers} == {hashlib.sha256(t.encode()).hexdigest() for t in TOKENS}
    assert not any(t in json.dumps(answers) for t in TOKENS)


async def test_a_bad_token_is_401_before_the_key_is_looked_at(
    secured: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = secured
    response = await client.post(
        "/heroes/", json=BODY, headers={"Authorization": "Bearer wrong", **key("x")}
    )
    assert response.status_code == 401
    assert await stored_answers(app) == []


# --- hostile keys -------------------------------------------------------------------------------

BAD_KEYS = [
    ("empty", ""),
    ("too long", "k" * 256),
    ("quoted too long", '"' + "k" * 256 + '"'),
    ("space inside", "a b"),
    ("two keys", "a, b"),
    ("unbalanced quote", '"abc'),
    ("empty quotes", '""'),
    ("escaped quote", '"a\\"b"'),
    ("semicolon", "abc;v=1"),
    ("non-ascii", "clé"),
    ("tab", "a\tb"),
    ("sql", "x' OR '1'='1"),
    ("percent", "%00"),
]


@pytest.mark.parametrize(("label", "value"), BAD_KEYS, ids=[label for label, _ in BAD_KEYS])
async def test_malformed_keys_are_400_and_write_nothing(
    client: httpx.AsyncClient, label: str, value: str
) -> None:
    response = await client.post(
        "/heroes/", json=BODY, headers=[(b"Idempotency-Key", value.encode())]
    )
    assert response.status_code == 400, label
    assert "Idempotency-Key must be" in response.json()["detail"]
    assert await names(client) == []


async def test_two_key_headers_are_400(client: httpx.AsyncClient) -> None:
    headers = [(b"Idempotency-Key", b"a"), (b"Idempotency-Key", b"b")]
    response = await client.post("/heroes/", json=BODY, headers=headers)
    assert response.status_code == 400
    assert await names(client) == []


async def test_longest_key_and_every_allowed_character_work(client: httpx.AsyncClient) -> None:
    for value in ["k" * 255, '"' + "q" * 255 + '"', "AZaz09-_.:~+/="]:
        first = await post(client, value)
        assert first.status_code == 200, value
        assert (await post(client, value)).headers[REPLAYED] == "true"


# --- retention ----------------------------------------------------------------------------------


async def test_an_expired_key_is_processed_afresh(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        running_app(settings.model_copy(update={"idempotency_ttl_s": 60})) as app,
        asgi_client(app) as client,
    ):
        first = await post(client, "k1")
        later = time.time() + 61
        monkeypatch.setattr(time, "time", lambda: later)  # what heroes.domain.idempotency reads
        again = await post(client, "k1")
        assert again.status_code == 200
        assert REPLAYED not in again.headers
        assert again.json()["id"] != first.json()["id"]
        [answer] = await stored_answers(app)
        assert json.loads(answer["body"]) == again.json()


async def store(session: Session, key: str, *, expires_at: int) -> None:
    answer = {"scope": "", "key": key, "fingerprint": "f", "status": 200, "body": "{}"}
    await session.execute(insert(idempotency.KEY), {**answer, "expires_at": expires_at})


async def test_purge_deletes_expired_answers_in_batches(app: FastAPI) -> None:
    session = Session(app.state.db)
    count = idempotency.PURGE_BATCH * 2 + 7
    async with session.transaction():
        for n in range(count + 3):
            await store(session, f"k{n}", expires_at=100 if n < count else 10**12)
    assert await idempotency.purge_expired(app.state.db, now=1000) == count
    assert [a["key"] for a in await stored_answers(app)] == [
        f"k{n}" for n in range(count, count + 3)
    ]


async def test_the_lifespan_purges_in_the_background(settings: Settings) -> None:
    fast = settings.model_copy(update={"idempotency_purge_interval_s": 0.05})
    async with running_app(fast) as app:
        await store(Session(app.state.db), "old", expires_at=1)
        for _ in range(100):
            if not await stored_answers(app):
                break
            await asyncio.sleep(0.05)
        assert await stored_answers(app) == []


async def test_answers_count_is_one_per_key(app: FastAPI, client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await post(client, "k1")
        await post(client, "k2")
    rows = await Session(app.state.db).fetch_all(
        select(func.count().label("n")).select_from(idempotency.KEY)
    )
    assert rows[0]["n"] == 2


# --- documentation ----------------------------------------------------------------------------


async def test_openapi_documents_the_header_and_its_answers(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path, method in [("/heroes/", "post"), ("/heroes/{hero_id}", "patch"),
                         ("/heroes/{hero_id}", "delete")]:  # fmt: skip
        operation = paths[path][method]
        [header] = [p for p in operation["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key"
        assert not header.get("required", False)
        assert {"400", "409", "422"} <= set(operation["responses"])
        assert "Idempotent-Replayed" in operation["responses"]["200"]["headers"]
