"""The log format: one JSON object per line, the request id on every line of a request."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from heroes.config import Settings
from heroes.logs import (
    ACCESS_LOGGER,
    JsonFormatter,
    PlainFormatter,
    RequestIdFilter,
    configure_if_unconfigured,
    logging_config,
    request_id_var,
)

from .conftest import asgi_client, running_app

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _record(
    msg: str = "hello %s", args: tuple[object, ...] = ("world",), **extra: object
) -> logging.LogRecord:
    record = logging.LogRecord("heroes.test", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def _json(record: logging.LogRecord) -> dict[str, object]:
    RequestIdFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_line_inside_a_request_has_the_request_id_and_fixed_keys() -> None:
    token = request_id_var.set("req-42")
    try:
        line = _json(_record())
    finally:
        request_id_var.reset(token)
    assert TS.fullmatch(str(line.pop("ts")))
    assert line == {
        "level": "warning",
        "logger": "heroes.test",
        "msg": "hello world",
        "pid": os.getpid(),
        "request_id": "req-42",
    }


def test_line_outside_a_request_has_no_request_id_key() -> None:
    line = _json(_record())
    assert "request_id" not in line
    assert list(line) == ["ts", "level", "logger", "msg", "pid"]


def test_structured_fields_become_top_level_keys() -> None:
    line = _json(_record("GET / 200", (), fields={"status": 200, "route": "/heroes/"}))
    assert (line["msg"], line["status"], line["route"]) == ("GET / 200", 200, "/heroes/")


def test_an_id_given_explicitly_is_kept() -> None:
    token = request_id_var.set("from-context")
    try:
        line = _json(_record(request_id="from-extra"))
    finally:
        request_id_var.reset(token)
    assert line["request_id"] == "from-extra"


def test_stack_and_preformatted_traceback_are_kept() -> None:
    record = _record(exc_text="Traceback (most recent call last):\nValueError: x")
    record.stack_info = "Stack (most recent call last):\n  File x"
    line = _json(record)
    assert line["exc"] == "Traceback (most recent call last):\nValueError: x"
    assert line["stack"] == "Stack (most recent call last):\n  File x"


def test_traceback_stays_inside_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        info = (type(exc), exc, exc.__traceback__)
        record = logging.LogRecord("heroes.errors", logging.ERROR, __file__, 1, "failed", (), info)
    line = _json(record)
    exc_text = str(line["exc"])
    assert exc_text.startswith("Traceback (most recent call last):\n")
    assert exc_text.endswith("RuntimeError: boom")


def test_hostile_message_still_gives_valid_ascii_json() -> None:
    # A lone surrogate (from hostile input echoed into a message) is refused by orjson.
    line = JsonFormatter().format(_record("name %s", ("\ud800\n",)))
    assert line.isascii()
    assert json.loads(line)["msg"] == "name \ud800\n"


def test_plain_format_for_local_reading() -> None:
    token = request_id_var.set("req-7")
    try:
        record = _record("GET /heroes/ 200", (), fields={"status": 200})
        RequestIdFilter().filter(record)
        line = PlainFormatter().format(record)
    finally:
        request_id_var.reset(token)
    assert line.endswith(" WARNING heroes.test [req-7] GET /heroes/ 200 status=200")
    outside = _record()
    RequestIdFilter().filter(outside)
    assert PlainFormatter().format(outside).endswith(" heroes.test [-] hello world")


def test_config_routes_every_server_logger_to_one_stdout_handler() -> None:
    config = logging_config("debug", "json")
    loggers = config["loggers"]
    assert config["root"] == {"level": "DEBUG", "handlers": ["stdout"]}
    assert config["handlers"]["stdout"]["stream"] == "ext://sys.stdout"
    assert config["handlers"]["stdout"]["filters"] == ["request_id"]
    assert config["formatters"]["heroes"] == {"()": JsonFormatter}
    # gunicorn turns propagation off on its loggers: they need the handler themselves.
    assert loggers["gunicorn.error"] == {
        "level": "DEBUG",
        "handlers": ["stdout"],
        "propagate": False,
    }
    # Server access logs stay off: the middleware writes the line with the request id.
    for name in ("gunicorn.access", "uvicorn.access"):
        assert loggers[name] == {"level": "WARNING", "handlers": [], "propagate": False}
    assert loggers[ACCESS_LOGGER] == {"level": "DEBUG", "propagate": True}
    assert logging_config("info", "plain")["formatters"]["heroes"] == {"()": PlainFormatter}


def test_access_lines_can_be_switched_off() -> None:
    assert logging_config("info", access_log=False)["loggers"][ACCESS_LOGGER]["level"] == "WARNING"


@pytest.mark.parametrize(
    ("level", "fmt", "message"),
    [
        (
            "loud",
            "json",
            "LOG_LEVEL must be one of critical, error, warning, info, debug, got 'loud'",
        ),
        ("info", "xml", "LOG_FORMAT must be one of json, plain, auto, got 'xml'"),
    ],
)
def test_unknown_level_or_format_is_refused(level: str, fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        logging_config(level, fmt)


@contextmanager
def bare_root() -> Iterator[logging.Logger]:
    """The root logger without handlers (as in a fresh CLI process; pytest adds its own for
    every test phase), everything logging_config touches restored afterwards."""
    root = logging.getLogger()
    names = ["", *logging_config()["loggers"]]
    saved = {name: logging.getLogger(name) for name in names}
    state = {name: (lg.handlers[:], lg.level, lg.propagate) for name, lg in saved.items()}
    root.handlers = []
    try:
        yield root
    finally:
        for name, (handlers, level, propagate) in state.items():
            saved[name].handlers = handlers
            saved[name].setLevel(level)
            saved[name].propagate = propagate


def test_cli_configures_json_logging_once(capsys: pytest.CaptureFixture[str]) -> None:
    with bare_root() as root:
        configure_if_unconfigured("info", "json")
        handlers = root.handlers[:]
        configure_if_unconfigured("debug", "plain")  # already configured: no change
        assert root.handlers == handlers
        assert len(handlers) == 1
        logging.getLogger("alembic.runtime.migration").info("Running upgrade")
    line = json.loads(capsys.readouterr().out)
    assert (line["logger"], line["msg"], line["level"]) == (
        "alembic.runtime.migration",
        "Running upgrade",
        "info",
    )


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("tty", "formatter"), [(True, PlainFormatter), (False, JsonFormatter)])
def test_auto_format_is_plain_on_a_terminal_and_json_otherwise(
    monkeypatch: pytest.MonkeyPatch, tty: bool, formatter: type[logging.Formatter]
) -> None:
    monkeypatch.setattr(sys, "stdout", _Stream(tty))
    assert logging_config("info", "auto")["formatters"]["heroes"]["()"] is formatter
    assert logging_config("info", "json")["formatters"]["heroes"]["()"] is JsonFormatter


@pytest.mark.anyio
async def test_the_pools_per_checkout_lines_are_not_logged_at_info(pg_settings: Settings) -> None:
    """psycopg_pool logs every checkout and return at INFO: two lines per request otherwise."""
    stream = io.StringIO()
    config = logging_config("info", "json")
    config["handlers"]["stdout"]["stream"] = stream
    del config["handlers"]["stdout"]["filters"]
    previous = logging.getLogger().handlers[:]
    logging.config.dictConfig(config)
    try:
        async with running_app(pg_settings) as app, asgi_client(app) as client:
            assert (await client.get("/heroes/")).status_code == 200
    finally:
        root = logging.getLogger()
        root.handlers[:] = previous
    pool_lines = [line for line in stream.getvalue().splitlines() if '"psycopg.pool"' in line]
    assert pool_lines == []
    assert logging.getLogger("psycopg.pool").isEnabledFor(logging.WARNING)
