"""The Team model family (as heroes/domain/models.py: a table model and its API shapes)."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlmodel import Field, SQLModel

from heroes.domain.models import TEXT_MAX, StorableText


class TeamsModel(SQLModel):
    # Its own metadata: the product's (SQLModel.metadata) is what alembic compares with the
    # migrations, and a table defined by the tests is not part of it.
    metadata = MetaData()


class TeamBase(TeamsModel):
    name: StorableText = Field(index=True, min_length=1, max_length=TEXT_MAX)
    headquarters: StorableText = Field(min_length=1, max_length=TEXT_MAX)


class Team(TeamBase, table=True):
    id: int | None = Field(default=None, primary_key=True)


class TeamPublic(TeamBase):
    id: int


class TeamCreate(TeamBase):
    pass


class TeamUpdate(TeamsModel):
    name: StorableText = Field(default=None, min_length=1, max_length=TEXT_MAX)
    headquarters: StorableText = Field(default=None, min_length=1, max_length=TEXT_MAX)
