"""heroes.worker's pure parts: drain settings, the crash-loop breaker, trusted proxies, and the
drain state machine of HeroesServer (the rest runs in real gunicorn: test_gunicorn_metrics)."""

from __future__ import annotations

import asyncio
import logging
import signal

import pytest
from uvicorn.config import Config

from heroes import lifecycle
from heroes.worker import (
    LIFESPAN_SHUTDOWN_MARGIN,
    CrashLoopBreaker,
    HeroesServer,
    drain_seconds,
    inflight_timeout,
    trusted_proxies,
)


@pytest.fixture(autouse=True)
def _not_draining() -> None:
    lifecycle.reset_draining()


# --- drain settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [("", 3.0), ("  ", 3.0), ("0", 0.0), ("2.5", 2.5), ("10", 10.0)]
)
def test_drain_seconds(raw: str, expected: float) -> None:
    assert drain_seconds({"SHUTDOWN_DRAIN_SECONDS": raw}) == expected


def test_drain_seconds_default_when_unset() -> None:
    assert drain_seconds({}) == 3.0


@pytest.mark.parametrize("raw", ["-1", "soon", "nan", "inf"])
def test_drain_seconds_refuses_nonsense(raw: str) -> None:
    with pytest.raises(ValueError, match="SHUTDOWN_DRAIN_SECONDS"):
        drain_seconds({"SHUTDOWN_DRAIN_SECONDS": raw})


def test_inflight_budget_is_what_is_left_of_graceful_timeout() -> None:
    # deploy/gunicorn.conf.py: graceful_timeout = GRACEFUL_TIMEOUT + drain + margin.
    assert inflight_timeout(20 + 3 + LIFESPAN_SHUTDOWN_MARGIN, 3) == 20
    assert inflight_timeout(25, 2.5) == 20
    assert inflight_timeout(3, 3) == 1  # never 0: uvicorn would not wait at all


# --- crash-loop breaker ----------------------------------------------------------------------


def _exit_record(
    pid: int, how: str = "exited with code %s.", detail: object = 7
) -> logging.LogRecord:
    return logging.LogRecord(
        "gunicorn.error", logging.ERROR, __file__, 1, f"Worker (pid:%s) {how}", (pid, detail), None
    )


def test_workers_that_booted_never_count() -> None:
    breaker = CrashLoopBreaker(failures=2, window=60)
    for pid in range(100, 110):  # ten booted workers die one after another: replaced as before
        breaker.booted(pid)
        assert breaker.exited(pid, now=float(pid)) is None


def test_boot_failures_within_the_window_stop_the_server() -> None:
    breaker = CrashLoopBreaker(failures=3, window=10)
    assert breaker.filter(_exit_record(1)) is True  # a filter that never drops a record
    assert breaker.exited(1, now=0.0) is None
    assert breaker.exited(2, now=5.0) is None
    assert breaker.exited(3, now=12.0) is None  # the first one is out of the window
    breaker.filter(_exit_record(4, "was sent %s!", "SIGSEGV"))
    reason = breaker.exited(4, now=14.0)
    assert reason is not None
    assert reason.startswith("crash loop: 3 workers died before they booted, within 9.0 s,")
    assert "the last: Worker (pid:4) was sent SIGSEGV;" in reason


def test_a_booted_worker_between_failures_does_not_reset_or_count() -> None:
    breaker = CrashLoopBreaker(failures=2, window=60)
    assert breaker.exited(1, now=0.0) is None
    breaker.booted(2)
    assert breaker.exited(2, now=1.0) is None
    reason = breaker.exited(3, now=2.0)
    assert reason is not None
    assert "the last: Worker (pid:3) exited;" in reason  # no line about it: still named


# --- trusted proxies --------------------------------------------------------------------------


def test_trusted_proxies_resolves_names_and_keeps_addresses() -> None:
    assert trusted_proxies("127.0.0.1", "") == "127.0.0.1"
    assert trusted_proxies("10.0.0.0/8, 127.0.0.1", "localhost").split(",")[:2] == [
        "10.0.0.0/8",
        "127.0.0.1",
    ]
    assert "127.0.0.1" in trusted_proxies("", "localhost").split(",")
    assert trusted_proxies("127.0.0.1", "localhost").count("127.0.0.1") == 1  # no duplicate


def test_a_name_that_does_not_resolve_is_not_trusted(capsys: pytest.CaptureFixture[str]) -> None:
    assert trusted_proxies("", "no-such-proxy.invalid") == ""
    assert "no-such-proxy.invalid" in capsys.readouterr().err


# --- HeroesServer: the drain state machine -------------------------------------------------------


async def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError


def _server(drain: float, *, started: bool = True) -> HeroesServer:
    server = HeroesServer(Config(app=_app), drain=drain)
    server.started = started
    return server


def test_first_sigterm_drains_a_second_one_exits() -> None:
    server = _server(3.0)
    server.handle_exit(signal.SIGTERM, None)
    assert lifecycle.is_draining()
    assert server.drain_deadline is not None
    assert not server.should_exit
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
    assert not server.force_exit


def test_no_drain_before_start_or_when_disabled() -> None:
    for server in (_server(3.0, started=False), _server(0.0)):
        server.handle_exit(signal.SIGTERM, None)
        assert server.should_exit
        assert server.drain_deadline is None
    assert not lifecycle.is_draining()


def test_sigint_twice_forces_and_sigquit_quits_at_once() -> None:
    server = _server(3.0)
    server.handle_exit(signal.SIGINT, None)
    assert server.should_exit
    assert not server.force_exit
    server.handle_exit(signal.SIGINT, None)
    assert server.force_exit
    quick = _server(3.0)
    quick.quick_exit()
    assert quick.should_exit
    assert quick.force_exit


def test_the_drain_ends_at_its_deadline(capsys: pytest.CaptureFixture[str]) -> None:
    server = _server(30.0)  # uvicorn's Config logs to stderr through its own handler
    server.handle_exit(signal.SIGTERM, None)
    asyncio.run(server.on_tick(1))
    assert not server.should_exit
    assert server.drain_deadline is not None
    server.drain_deadline -= 60  # as if the drain window had passed
    asyncio.run(server.on_tick(2))
    assert server.should_exit
    err = capsys.readouterr().err
    assert "SIGTERM: draining for 30.0s" in err
    assert "Drain over: no longer accepting connections" in err
