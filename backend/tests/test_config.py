"""Settings come from the environment (and *_FILE); production refuses placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from heroes.config import Settings, describe_error, get_settings, settings_or_exit

PG = "postgresql://heroes@db:5432/heroes"
TOKEN = "t0k3n-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "DATABASE_PASSWORD",
        "API_TOKENS",
        "ENVIRONMENT",
        "DATABASE_URL_FILE",
        "DATABASE_PASSWORD_FILE",
        "API_TOKENS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()


def test_defaults_give_an_embedded_sqlite_database() -> None:
    settings = Settings()
    assert settings.is_sqlite
    assert settings.environment == "development"


def test_postgresql_url_is_normalised_to_psycopg3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", PG)
    settings = Settings()
    assert settings.sync_url.drivername == "postgresql+psycopg"


def test_secrets_are_read_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "url").write_text(PG + "\n")
    (tmp_path / "password").write_text("s3cret-pa55word\n")
    (tmp_path / "tokens").write_text(f"{TOKEN}\n{TOKEN}-next\n")
    monkeypatch.setenv("DATABASE_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("API_TOKENS_FILE", str(tmp_path / "tokens"))
    settings = Settings()
    assert settings.sync_url.password == "s3cret-pa55word"
    assert settings.sync_url.host == "db"
    assert settings.token_values == (TOKEN.encode(), f"{TOKEN}-next".encode())


def test_unreadable_secret_file_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", "/nonexistent/password")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "DATABASE_PASSWORD_FILE=/nonexistent/password cannot be read" in describe_error(
        caught.value
    )


def test_get_settings_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_settings() is get_settings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "sqlite:///x.db"}, "production needs a PostgreSQL DATABASE_URL"),
        ({"DATABASE_URL": PG}, "production needs a real database password"),
        (
            {"DATABASE_URL": PG, "DATABASE_PASSWORD": "changeme"},
            "production needs a real database password",
        ),
        ({"DATABASE_URL": PG, "DATABASE_PASSWORD": "Xy9-long-random"}, "needs API_TOKENS"),
        (
            {
                "DATABASE_URL": PG,
                "DATABASE_PASSWORD": "Xy9-long-random",
                "API_TOKENS": "changeme-changeme-changeme",
            },
            "refuses placeholder API tokens",
        ),
    ],
)
def test_production_refuses_placeholder_secrets(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    line = describe_error(caught.value)
    assert message in line
    assert "\n" not in line


def test_production_accepts_real_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", PG)
    monkeypatch.setenv("DATABASE_PASSWORD", "Xy9-long-random")
    monkeypatch.setenv("API_TOKENS", TOKEN)
    assert Settings().environment == "production"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://u@h/db"),
        ("DATABASE_URL", "not a url"),
        ("API_TOKENS", "short"),
        ("LOG_LEVEL", "loud"),
        ("DB_POOL_SIZE", "0"),
        ("MAX_BODY_BYTES", "10"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert describe_error(caught.value).startswith("invalid configuration: ")


def test_describe_error_for_plain_exceptions() -> None:
    assert describe_error(RuntimeError("boom")) == "invalid configuration: boom"


def test_uncached_validation_leaves_the_cache_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKENS", TOKEN)
    assert settings_or_exit(cached=False).token_values == (TOKEN.encode(),)
    assert get_settings.cache_info().currsize == 0
    monkeypatch.setenv("API_TOKENS", f"{TOKEN}-rotated")
    assert get_settings().token_values == (f"{TOKEN}-rotated".encode(),)


def test_settings_or_exit_prints_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(SystemExit) as caught:
        settings_or_exit(cached=False)
    assert caught.value.code == 2
    assert capsys.readouterr().err.startswith("heroes: invalid configuration: production needs")
