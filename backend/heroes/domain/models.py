"""The tutorial's model family, with the bounds the database can really hold."""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import AfterValidator, BeforeValidator
from pydantic import Field as SchemaField
from pydantic_core import PydanticCustomError
from sqlalchemy import BigInteger, Column, Index, Integer, String, Text
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


# The pattern only documents the rule (the validator gives the readable error): generated
# clients and fuzzers then know that NUL is refused.
StorableText = Annotated[
    str, AfterValidator(storable_text), SchemaField(json_schema_extra={"pattern": "^[^\\u0000]*$"})
]


def json_integer(value: Any) -> Any:
    """JSON numbers only: `true` or "7" would otherwise be coerced to 1 or 7 and stored, although
    the schema (the tutorial's too) says integer. 7.0 is an integer in JSON Schema: accepted."""
    if isinstance(value, bool | str):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# The bounds here, not in sqlmodel's Field: that one writes them into the schema as floats
# (2147483647.0), which fuzzers then misread as no bound on an integer.
Age = Annotated[int, Ge(0), Le(INT32_MAX), BeforeValidator(json_integer)]


# The tutorial's first hero, as the example Swagger UI's "Try it out" starts from (it would
# otherwise invent a string from the pattern).
NAME = {"examples": ["Deadpond"]}
SECRET_NAME = {"examples": ["Dive Wilson"]}
AGE = {"examples": [30]}


class HeroBase(SQLModel):
    name: StorableText = Field(index=True, min_length=1, max_length=TEXT_MAX, schema_extra=NAME)
    age: Age | None = Field(default=None, index=True, schema_extra=AGE)


class Hero(HeroBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    secret_name: str = Field(max_length=TEXT_MAX)


class HeroPublic(HeroBase):
    id: int


class HeroCreate(HeroBase):
    secret_name: StorableText = Field(min_length=1, max_length=TEXT_MAX, schema_extra=SECRET_NAME)


class HeroUpdate(HeroBase):
    # `name` and `secret_name` may be left out but not set to null: the columns are NOT NULL.
    # Field(default=None) keeps the OpenAPI type a plain string while the field stays optional.
    name: StorableText = Field(default=None, min_length=1, max_length=TEXT_MAX, schema_extra=NAME)
    age: Age | None = Field(default=None, schema_extra=AGE)
    secret_name: StorableText = Field(
        default=None, min_length=1, max_length=TEXT_MAX, schema_extra=SECRET_NAME
    )


class IdempotencyKey(SQLModel, table=True):
    """A key sent with a write, and the response stored for its retries (heroes.domain.idempotency).

    Written in the transaction of the write it answers, so a crash keeps both or neither. The
    caller's token is kept only as a SHA-256 digest (``scope``); times are Unix seconds, so the
    same column works on SQLite and PostgreSQL.
    """

    __tablename__ = "idempotency_key"
    __table_args__ = (Index("ix_idempotency_key_expires_at", "expires_at"),)

    scope: str = Field(sa_column=Column(String(64), primary_key=True))
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False))
    status: int = Field(sa_column=Column(Integer, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False))
