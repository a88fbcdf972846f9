"""heroes.worker's pure parts: drain settings, CPU sizing from cgroups, trusted proxies, and the
drain state machine of HeroesServer (the rest runs in real gunicorn: test_gunicorn_metrics)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
from pathlib import Path

import pytest
from uvicorn.config import Config

from heroes import lifecycle, worker
from heroes.worker import (
    LIFESPAN_SHUTDOWN_MARGIN,
    HeroesServer,
    default_workers,
    drain_seconds,
    effective_cpu_count,
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


# --- CPU sizing -------------------------------------------------------------------------------


def _mountinfo(fstype: str, mount_point: Path, root: str = "/", options: str = "rw") -> str:
    return f"35 24 0:30 {root} {mount_point} rw,nosuid - {fstype} cgroup {options}"


def test_cgroup_v2_quota_of_the_tightest_ancestor(tmp_path: Path) -> None:
    leaf = tmp_path / "system.slice" / "docker-abc.scope"
    leaf.mkdir(parents=True)
    (leaf / "cpu.max").write_text("max 100000\n")  # unlimited here...
    (tmp_path / "system.slice" / "cpu.max").write_text("150000 100000\n")  # ...1.5 CPUs above
    dirs = worker._cgroup_dirs(
        "0::/system.slice/docker-abc.scope\n", _mountinfo("cgroup2", tmp_path), tmp_path
    )
    assert dirs == [(leaf, True), (leaf.parent, True), (tmp_path, True)]
    quotas = [worker._quota_v2(d) for d, _ in dirs]
    assert quotas == [None, 1.5, None]


def test_cgroup_v1_container_sees_only_its_subtree(tmp_path: Path) -> None:
    # In a v1 container /proc/self/cgroup names the host path; the mount shows the subtree.
    cpu = tmp_path / "cpu,cpuacct"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("200000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    dirs = worker._cgroup_dirs(
        "4:cpu,cpuacct:/docker/0123\n3:memory:/docker/0123\n",
        _mountinfo("cgroup", cpu, root="/docker/0123", options="rw,cpu,cpuacct"),
        tmp_path,
    )
    assert dirs == [(cpu, False)]
    assert worker._quota_v1(cpu) == 2.0


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [("-1", "100000", None), ("max", "100000", None), ("50000", "100000", 0.5), ("", "", None)],
)
def test_quota_ratio(quota: str, period: str, expected: float | None) -> None:
    assert worker._ratio(quota, period) == expected


def test_no_cgroup_information_falls_back_to_the_usual_mounts(tmp_path: Path) -> None:
    dirs = worker._cgroup_dirs("", "", tmp_path)
    assert dirs == [(tmp_path, True), (tmp_path / "cpu", False), (tmp_path / "cpu,cpuacct", False)]
    assert worker._cgroup_dirs("", "", tmp_path / "absent") == []


def test_unrelated_mounts_and_garbled_lines_are_skipped(tmp_path: Path) -> None:
    mountinfo = "\n".join(
        ["garbage", "1 2 3 - short", _mountinfo("tmpfs", tmp_path), _mountinfo("cgroup", tmp_path)]
    )
    # A v1 mount without the cpu controller, and no v2 path in /proc/self/cgroup: nothing.
    assert worker._cgroup_dirs("bad line\n5:memory:/x\n", mountinfo, tmp_path / "absent") == []


def test_effective_cpu_count_rounds_a_quota_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    monkeypatch.setattr(worker, "cgroup_cpu_limit", lambda: 1.5)
    assert effective_cpu_count() == 2
    monkeypatch.setattr(worker, "cgroup_cpu_limit", lambda: None)
    assert effective_cpu_count() == 4
    monkeypatch.setattr(worker, "cgroup_cpu_limit", lambda: 0.25)
    assert effective_cpu_count() == 1


def test_cgroup_cpu_limit_reads_this_process() -> None:
    limit = worker.cgroup_cpu_limit()
    assert limit is None or (limit > 0 and math.isfinite(limit))


@pytest.mark.parametrize(("cpus", "workers"), [(1, 2), (2, 2), (4, 4), (64, 8)])
def test_default_workers(cpus: int, workers: int) -> None:
    assert default_workers(cpus) == workers


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
