"""The tutorial's model family, with the bounds the database can really hold."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from sqlmodel import Field, SQLModel

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# 255 characters are at most 1020 UTF-8 bytes, well inside PostgreSQL's btree row limit (~2700).
TEXT_MAX = 255


def storable_text(value: str) -> str:
    """Reject NUL, which PostgreSQL cannot store in text (SQLite would accept it silently).
    Lone surrogates, which UTF-8 cannot encode, are already refused by pydantic's str."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


StorableText = Annotated[str, AfterValidator(storable_text)]


class HeroBase(SQLModel):
    name: StorableText = Field(index=True, min_length=1, max_length=TEXT_MAX)
    age: int | None = Field(default=None, index=True, ge=0, le=INT32_MAX)


class Hero(HeroBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    secret_name: str = Field(max_length=TEXT_MAX)


class HeroPublic(HeroBase):
    id: int


class HeroCreate(HeroBase):
    secret_name: StorableText = Field(min_length=1, max_length=TEXT_MAX)


class HeroUpdate(HeroBase):
    # `name` and `secret_name` may be left out but not set to null: the columns are NOT NULL.
    # Field(default=None) keeps the OpenAPI type a plain string while the field stays optional.
    name: StorableText = Field(default=None, min_length=1, max_length=TEXT_MAX)
    age: int | None = Field(default=None, ge=0, le=INT32_MAX)
    secret_name: StorableText = Field(default=None, min_length=1, max_length=TEXT_MAX)
