"""heroes.db on both backends: statements compiled once per statement object, rows by column
name, transactions that commit together or not at all, and a second table with no change here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select, text

from heroes.db import Database, Session
from heroes.errors import ValueRejected

pytestmark = pytest.mark.anyio

# A second model, as the SQLModel tutorial's Team would be: a table of its own, queried through
# the same Session. The db layer knows nothing of either table.
TEAM = Table(
    "team",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("headquarters", String(255), nullable=False),
)
INSERT_TEAM = insert(TEAM).values(name=bindparam("name"), headquarters=bindparam("hq"))
INSERT_TEAM_RETURNING = INSERT_TEAM.returning(TEAM.c.id, TEAM.c.name)
SELECT_TEAMS = select(TEAM.c.id, TEAM.c.name, TEAM.c.headquarters).order_by(TEAM.c.id)


@pytest.fixture
async def db(app: FastAPI) -> AsyncIterator[Database]:
    database: Database = app.state.db
    session = Session(database)
    await session.execute(
        text(
            "CREATE TABLE team (id INTEGER PRIMARY KEY, name VARCHAR(255) NOT NULL, "
            "headquarters VARCHAR(255) NOT NULL)"
            if database.dialect.name == "sqlite"
            else "CREATE TABLE team (id SERIAL PRIMARY KEY, name VARCHAR(255) NOT NULL, "
            "headquarters VARCHAR(255) NOT NULL)"
        )
    )
    yield database
    await session.execute(text("DROP TABLE team"))


async def test_each_statement_is_compiled_once_and_is_its_own_key(app: FastAPI) -> None:
    db: Database = app.state.db
    first = db.sql(SELECT_TEAMS)
    assert db.sql(SELECT_TEAMS) is first  # from the cache, not compiled again
    # Two statements that a string key might have confused ("insert") keep their own SQL.
    assert db.sql(INSERT_TEAM_RETURNING) != db.sql(INSERT_TEAM)
    assert "name" in db.sql(INSERT_TEAM_RETURNING).partition("RETURNING")[2]
    assert "name" not in db.sql(INSERT_TEAM).partition("RETURNING")[2]


async def test_a_second_table_works_through_the_same_session(db: Database) -> None:
    session = Session(db)
    row = await session.fetch_one(INSERT_TEAM_RETURNING, {"name": "Preventers", "hq": "Sharp"})
    assert row is not None
    assert dict(row) == {"id": 1, "name": "Preventers"}
    await session.execute(INSERT_TEAM, {"name": "Z-Force", "hq": "Sister Margaret's Bar"})
    rows = await session.fetch_all(SELECT_TEAMS)
    assert [dict(r) for r in rows] == [
        {"id": 1, "name": "Preventers", "headquarters": "Sharp"},
        {"id": 2, "name": "Z-Force", "headquarters": "Sister Margaret's Bar"},
    ]
    assert rows[1]["headquarters"] == "Sister Margaret's Bar"  # by column name


async def test_transaction_commits_every_statement_together(db: Database) -> None:
    session = Session(db)
    async with session.transaction():
        await session.execute(INSERT_TEAM, {"name": "Preventers", "hq": "Sharp"})
        await session.execute(INSERT_TEAM, {"name": "Z-Force", "hq": "Bar"})
    assert [r["name"] for r in await Session(db).fetch_all(SELECT_TEAMS)] == [
        "Preventers",
        "Z-Force",
    ]


async def test_transaction_that_raises_leaves_nothing(db: Database) -> None:
    session = Session(db)

    async def two_inserts_the_second_refused() -> None:
        async with session.transaction():
            await session.execute(INSERT_TEAM, {"name": "Preventers", "hq": "Sharp"})
            await session.execute(INSERT_TEAM, {"name": None, "hq": "nowhere"})  # NOT NULL

    with pytest.raises(ValueRejected):
        await two_inserts_the_second_refused()
    assert await Session(db).fetch_all(SELECT_TEAMS) == []
    # The session is usable again afterwards, outside any transaction.
    await session.execute(INSERT_TEAM, {"name": "Z-Force", "hq": "Bar"})
    assert len(await session.fetch_all(SELECT_TEAMS)) == 1


async def test_other_sessions_do_not_see_a_transaction_before_it_commits(db: Database) -> None:
    writer = Session(db)
    inserted = asyncio.Event()
    release = asyncio.Event()

    async def write() -> None:
        async with writer.transaction():
            await writer.execute(INSERT_TEAM, {"name": "Preventers", "hq": "Sharp"})
            inserted.set()
            await release.wait()

    task = asyncio.create_task(write())
    await inserted.wait()
    reader = asyncio.create_task(Session(db).fetch_all(SELECT_TEAMS))
    await asyncio.sleep(0.05)
    if reader.done():  # PostgreSQL: read committed, the reader did not wait
        assert reader.result() == []
    release.set()
    await task
    seen = await reader
    assert [r["name"] for r in seen] in ([], ["Preventers"])  # never a half transaction
    assert len(await Session(db).fetch_all(SELECT_TEAMS)) == 1


async def test_nested_transaction_is_refused(db: Database) -> None:
    session = Session(db)
    async with session.transaction():
        with pytest.raises(RuntimeError, match="already open"):
            async with session.transaction():
                pass
