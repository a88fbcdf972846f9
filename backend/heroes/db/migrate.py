"""Alembic, driven from the settings; the only thing that creates or changes tables."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Select, column, select, table

from heroes.config import Settings
from heroes.db import Session

# Any constant shared by every migration runner; "heroes" in ASCII.
ADVISORY_LOCK_KEY = 0x6865726F6573


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("heroes.db") / "migrations"))
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)


def head_revision(settings: Settings) -> str | None:
    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


@dataclass(frozen=True)
class SchemaExpectation:
    """Which database revisions this code can serve."""

    head: str | None
    known: frozenset[str]

    @classmethod
    def of(cls, settings: Settings) -> SchemaExpectation:
        script = ScriptDirectory.from_config(alembic_config(settings))
        known = frozenset(rev.revision for rev in script.walk_revisions())
        return cls(head=script.get_current_head(), known=known)

    def accepts(self, revision: str | None) -> bool:
        # A revision this code does not know is newer: a release migrates before it rolls out, and
        # migrations are expand-only, so old pods stay ready and a rollback can become ready.
        return revision == self.head or (revision is not None and revision not in self.known)

    def describe(self, revision: str | None) -> str:
        return f"schema at {revision}, expected {self.head}"


@cache
def _select_revision() -> Select[Any]:
    return select(column("version_num")).select_from(table("alembic_version"))


async def current_revision(session: Session) -> str | None:
    """The schema's revision; raises heroes.db.SchemaMissing when never migrated."""
    row = await session.fetch_one(_select_revision())
    return None if row is None else str(row["version_num"])
