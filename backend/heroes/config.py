"""Settings, read from the environment only (each secret also from a ``*_FILE`` path)."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

from heroes.logs import known_level

# Values that mean "nobody set a real secret yet"; production refuses them.
PLACEHOLDER_MARKERS = ("changeme", "change-me", "change_me", "placeholder", "example", "dev-only")
SECRET_FILE_FIELDS = ("database_url", "database_password", "api_tokens")


class Environment(StrEnum):
    development = "development"
    staging = "staging"
    production = "production"


class LogFormat(StrEnum):
    json = "json"
    plain = "plain"
    auto = "auto"  # plain on a terminal, json otherwise (heroes.logs.resolve_format)


def _read_secret_files(data: dict[str, Any]) -> dict[str, Any]:
    """``FOO_FILE=/path`` supplies ``FOO`` from that file (trailing newline stripped)."""
    for name in SECRET_FILE_FIELDS:
        path = os.environ.get(f"{name.upper()}_FILE")
        if path and not os.environ.get(name.upper()):
            try:
                data[name] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"{name.upper()}_FILE={path} cannot be read: {exc.strerror}"
                ) from exc
    return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    environment: Environment = Environment.development
    database_url: str = "sqlite:///./heroes.db"
    database_password: SecretStr | None = None
    db_pool_size: int = Field(default=5, ge=1, le=100)
    db_max_overflow: int = Field(default=10, ge=0, le=100)
    db_pool_timeout: float = Field(default=2.0, gt=0, le=120)
    db_pool_max_idle: float = Field(default=600.0, ge=1, le=86400)
    db_pool_pre_ping: bool = True
    db_connect_timeout: int = Field(default=3, ge=1, le=120)
    db_statement_timeout_ms: int = Field(default=5000, ge=0)
    # How long a database connection may stay silent (no TCP acknowledgement, no keepalive
    # answer: a partition, a vanished host) before either end declares it dead; also the margin
    # the client gives the server past DB_STATEMENT_TIMEOUT_MS before it abandons a statement.
    db_network_timeout: float = Field(default=3.0, ge=1, le=120)
    docs_enabled: bool = True
    max_body_bytes: int = Field(default=65536, ge=1024)
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    auth_protect_reads: bool = False
    log_level: str = "info"
    log_format: LogFormat = LogFormat.auto
    ready_timeout: float = Field(default=2.0, gt=0, le=60)
    # The image's build (Dockerfile VERSION/REVISION build args, set as these variables there):
    # /health/live reports them, so anyone can see which build answers.
    build_version: str = ""  # empty: the installed package's version
    build_revision: str = "unknown"
    # How long an Idempotency-Key's answer is kept for replay, and how often expired ones are
    # purged (heroes.domain.idempotency).
    idempotency_ttl_s: int = Field(default=86400, ge=60, le=30 * 86400)
    idempotency_purge_interval_s: float = Field(default=300.0, gt=0, le=86400)

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        return _read_secret_files(data) if isinstance(data, dict) else data

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [t.strip() for t in value.replace("\n", ",").split(",") if t.strip()]
        return value

    @field_validator("api_tokens")
    @classmethod
    def _tokens_long_enough(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(len(t.get_secret_value()) < 16 for t in value):
            raise ValueError("every API token must be at least 16 characters")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return known_level(value)

    @field_validator("database_url")
    @classmethod
    def _parseable_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except Exception as exc:
            raise ValueError("DATABASE_URL is not a valid database URL") from exc
        if url.get_backend_name() not in {"sqlite", "postgresql"}:
            raise ValueError("DATABASE_URL must be a sqlite:// or postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _production_has_real_secrets(self) -> Settings:
        if self.environment is not Environment.production:
            return self
        url = self.sync_url
        if url.get_backend_name() != "postgresql":
            raise ValueError("production needs a PostgreSQL DATABASE_URL")
        password = url.password or ""
        if not password or _is_placeholder(password):
            raise ValueError("production needs a real database password (DATABASE_PASSWORD_FILE)")
        if not self.api_tokens:
            raise ValueError("production needs API_TOKENS or API_TOKENS_FILE")
        if any(_is_placeholder(t.get_secret_value()) for t in self.api_tokens):
            raise ValueError("production refuses placeholder API tokens")
        return self

    @property
    def sync_url(self) -> URL:
        """The database URL for synchronous use (alembic, CLI): psycopg 3 for PostgreSQL."""
        url = make_url(self.database_url)
        if url.get_backend_name() == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        else:
            url = url.set(drivername="sqlite")
        if self.database_password is not None:
            url = url.set(password=self.database_password.get_secret_value())
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.sync_url.get_backend_name() == "sqlite"

    @property
    def token_values(self) -> tuple[bytes, ...]:
        return tuple(t.get_secret_value().encode() for t in self.api_tokens)


def _is_placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(marker in lowered for marker in PLACEHOLDER_MARKERS)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_or_exit(*, cached: bool = True) -> Settings:
    """The settings, or one readable line on stderr and exit status 2 (no traceback).

    ``cached=False`` validates without filling the cache: the gunicorn master uses it, so that
    workers forked after a reload (SIGHUP) read the environment and secret files afresh.
    """
    try:
        return get_settings() if cached else Settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        print(f"heroes: {describe_error(exc)}", file=sys.stderr)
        raise SystemExit(2) from None


def describe_error(exc: Exception) -> str:
    """One readable line for a settings error, instead of a traceback."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = []
        for err in errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__").upper()
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        return "invalid configuration: " + "; ".join(parts)
    return f"invalid configuration: {exc}"
