"""Drills 8 and 9: ``deploy/scripts/rollout.sh IMAGE`` under the mixed load, through the proxy.

8. To a newly built image (the stack's image plus a new BUILD_REVISION, built by the drill):
   pass when the script exits 0, no request failed (no 5xx, 4xx, refused or lost connection),
   every acknowledged write is readable, and every replica, and every answer through the proxy,
   reports the new revision. Reports the rollout's duration.
9. To an image whose api never gets healthy (it listens on 127.0.0.1:8001, so neither its
   healthcheck nor the proxy reaches it): pass when the script exits non-zero with one clear
   ``rollout: FAILED`` line, no request failed, and the old replicas (same containers) still
   answer everywhere with the old revision.
19. To an image whose server exits at start (its app module does not import; migrations still
   pass), so its replicas restart in a loop: as 9, and the script gives up within 20 s of the
   first exit of a new replica instead of waiting for its health deadline (left at 120 s).
29. To images whose workers end the process at boot three ways (``raise SystemExit(7)`` and
   ``os._exit(9)`` appended to heroes/main.py, a segmentation fault in its import): gunicorn
   respawns such workers forever by itself; its crash-loop breaker (deploy/gunicorn.conf.py)
   stops the server instead. As 9, for each: rolled back within 20 s of the first worker death
   (the server's line says when it stopped and how long its workers took to die), and the FAILED
   line carries that line, naming the crash loop and the last worker's exit.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

import pytest

from drills.common import (
    Context,
    DrillResult,
    LoadRun,
    check_persistence,
    derived_image,
    describe,
    expect_answers,
    proxied_revisions,
    replica_revisions,
    rollout,
    warmed_load,
)
from drills.stack import log

TITLE_NEW = "Rollout to a new image under load (rollout.sh)"
TITLE_BROKEN = "Rollout to an image that never gets healthy (rollout.sh)"
TITLE_CRASHING = "Rollout to an image whose server exits at start (rollout.sh)"
#: Drill 9's wait for the broken replicas (ROLLOUT_TIMEOUT): they never get healthy anyway.
BROKEN_TIMEOUT_S = 20
#: Drill 19: rollout.sh gives up within 20 s of a new replica's first exit, not at its health
#: deadline.
CRASH_GIVE_UP_S = 20
TITLE_BOOT_CRASHES = "Rollout to images whose workers die at boot: exit 7, os._exit(9), SIGSEGV"
#: Drill 29: what each image appends to heroes/main.py, and how gunicorn reports that worker end.
BOOT_CRASHES = {
    "exit7": ("raise SystemExit(7)", "exited with code 7"),
    "os-exit9": ("import os; os._exit(9)", "exited with code 9"),
    "segfault": ("import ctypes; ctypes.string_at(0)", "was sent SIGSEGV"),
}


@pytest.mark.drill(8, TITLE_NEW, stage="new-image", services=("api", "proxy"))
def test_rollout_new_image(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    prefix = f"d8-{ctx.run_id}"
    revision = f"drill8-{ctx.run_id}"
    image = derived_image(
        stack, f"{stack.image}-drill8",
        f"ENV BUILD_REVISION={revision}",
        f'LABEL org.opencontainers.image.revision="{revision}"',
    )  # fmt: skip
    before = stack.containers("api")
    old = set(replica_revisions(stack).values())
    with warmed_load(ctx, prefix) as load:
        log(f"drill 8: rollout.sh {image} ({len(before)} replicas, revision {old} -> {revision})")
        t0 = time.time()
        code, stderr, seconds = rollout(stack, image)
        print(stderr, flush=True)
        expect_answers(result, load, 2 * ctx.clients, "after the rollout")
        data = load.stop()
    run_ = LoadRun(data)
    if code == 0:
        stack.image = image  # later compose commands must not recreate the replicas
    after = replica_revisions(stack)
    proxied = proxied_revisions(ctx.refresh_url())
    failed = run_.failed
    result.figures.update(
        clients=ctx.clients,
        exit_code=code,
        rollout_s=round(seconds, 1),
        sent=len(run_.sent),
        during_rollout=sum(1 for r in run_.requests if r.started >= t0),
        failed=len(failed),
        counts=run_.counts(),
        replicas_before=len(before),
        replicas_after=len(after),
        old_revisions=sorted(old),
        replica_revisions=after,
        proxied_new=sum(r == revision for r in proxied),
        rps=round(run_.rate),
    )
    check_persistence(result, stack, run_, prefix)
    f = result.figures
    result.expect(code == 0, f"rollout.sh exited {code}: {stderr.strip()[-500:]}")
    result.expect(not failed, f"{len(failed)} requests failed: {describe(failed)}")
    result.expect(
        len(after) == len(before) and set(after.values()) == {revision},
        f"replicas report {after}, want {len(before)} x {revision}",
    )
    result.expect(
        f["proxied_new"] == len(proxied), f"through the proxy: {proxied} (want all {revision})"
    )
    result.expect(not set(before) & set(stack.containers("api")), "old replicas still run")
    result.summary = (
        f"{ctx.clients} clients (GET one/list/POST/PATCH): rollout of {f['replicas_before']} "
        f"replicas took {f['rollout_s']} s (exit {code}); sent {f['sent']} "
        f"({f['during_rollout']} during the rollout), failed {f['failed']}; acked POST "
        f"{f['acked']}, in DB {f['in_db']}, lost {f['lost']}; acked PATCH {f['patches_acked']}, "
        f"not in DB {f['patch_lost']}; new revision on {len(after)}/{f['replicas_before']} "
        f"replicas and {f['proxied_new']}/{len(proxied)} answers through the proxy"
    )


@pytest.mark.drill(9, TITLE_BROKEN, stage="restarts", services=("api", "proxy"))
def test_rollout_never_healthy(ctx: Context, result: DrillResult) -> None:
    image = derived_image(
        ctx.stack, f"{ctx.stack.image}-drill9",
        "ENV BIND=127.0.0.1:8001 BUILD_REVISION=drill9-never-healthy",
    )  # fmt: skip
    _failed_rollout(ctx, result, image, rollout_timeout=BROKEN_TIMEOUT_S)


@pytest.mark.drill(19, TITLE_CRASHING, stage="restarts", services=("api", "proxy"))
def test_rollout_crashing_workers(ctx: Context, result: DrillResult) -> None:
    image = derived_image(
        ctx.stack, f"{ctx.stack.image}-drill19",
        # gunicorn's app argument overrides the config's factory: every worker fails to import
        # it, so gunicorn exits (status 3) and the restart policy starts it again, in a loop.
        'CMD ["gunicorn", "-c", "/app/deploy/gunicorn.conf.py", "heroes.not_in_this_release:app"]',
    )  # fmt: skip
    _failed_rollout(ctx, result, image)
    first_exit = result.figures.pop("first_exit", None)
    ended = result.figures.pop("ended", None)
    result.figures.pop("started", None)
    given_up = None if first_exit is None or ended is None else round(ended - first_exit, 1)
    result.figures["given_up_after_first_exit_s"] = given_up
    result.expect(first_exit is not None, "no new replica exited: was the image broken at all?")
    result.expect(
        given_up is not None and given_up <= CRASH_GIVE_UP_S,
        f"rollout.sh ended {given_up} s after the first exit of a new replica",
    )
    result.summary += f"; gave up {given_up} s after the first exit of a new replica"


def _crashing_image(ctx: Context, name: str, line: str) -> str:
    """The stack's image with ``line`` at the end of heroes/main.py, its bytecode compiled again
    (the image's .pyc are unchecked-hash: an edited source alone would not be read)."""
    spec = "import importlib.util as u; print(u.find_spec('heroes.main').origin)"
    return derived_image(
        ctx.stack, f"{ctx.stack.image}-drill29-{name}",
        "USER root",
        f'RUN f=$(python -c "{spec}") && printf "\\n{line}\\n" >> "$f" '
        '&& python -m compileall -q --invalidation-mode unchecked-hash "$f"',
        "USER 10001:10001",
    )  # fmt: skip


@pytest.mark.drill(29, TITLE_BOOT_CRASHES, stage="restarts", services=("api", "proxy"))
def test_rollout_workers_dying_at_boot(ctx: Context, result: DrillResult) -> None:
    runs = []
    for name, (line, how) in BOOT_CRASHES.items():
        image = _crashing_image(ctx, name, line)
        one = _failed_rollout(
            ctx, DrillResult(29, name, services=("api", "proxy")), image,
            prefix=f"d29{name}-{ctx.run_id}",
        )  # fmt: skip
        f = one.figures
        message = f["message"] or ""
        # The server's line says when it stopped and over how long its workers died.
        halted = re.search(r'"ts":"([^"]+)".*within ([0-9.]+) s', message)
        first_death = None
        if halted:
            stopped = datetime.fromisoformat(halted[1].replace("Z", "+00:00")).timestamp()
            first_death = stopped - float(halted[2])
        rolled_back = None if first_death is None else round(f["ended"] - first_death, 1)
        runs.append({
            "image": name, "exit_code": f["exit_code"], "rollout_s": f["rollout_s"],
            "rolled_back_after_first_death_s": rolled_back, "sent": f["sent"],
            "failed": f["failed"], "message": f["message"],
        })  # fmt: skip
        result.failures += [f"{name}: {miss}" for miss in one.failures]
        result.expect(
            rolled_back is not None and rolled_back <= CRASH_GIVE_UP_S,
            f"{name}: rollout.sh ended {rolled_back} s after the first worker death",
        )
        result.expect(
            "crash loop" in message and how in message,
            f"{name}: the FAILED line does not name the crash loop and {how!r}: {message!r}",
        )
    result.figures["rollouts"] = runs
    result.summary = "; ".join(
        f"{r['image']}: rolled back {r['rolled_back_after_first_death_s']} s after the first "
        f"worker death (rollout.sh {r['rollout_s']} s, exit {r['exit_code']}), sent {r['sent']}, "
        f"failed {r['failed']}"
        for r in runs
    ) + (f"; line: {runs[-1]['message']!r}" if runs else "")


def _failed_rollout(
    ctx: Context,
    result: DrillResult,
    image: str,
    rollout_timeout: int | None = None,
    prefix: str | None = None,
) -> DrillResult:
    """A rollout to ``image`` that must fail, leaving the old replicas serving."""
    stack = ctx.stack
    prefix = prefix or f"d{result.number}-{ctx.run_id}"
    before = stack.containers("api")
    old = replica_revisions(stack)
    with warmed_load(ctx, prefix) as load:
        env = {} if rollout_timeout is None else {"ROLLOUT_TIMEOUT": str(rollout_timeout)}
        log(f"drill {result.number}: rollout.sh {image} {env}")
        started = time.time()
        code, stderr, seconds = rollout(stack, image, **env)
        ended = time.time()
        print(stderr, flush=True)
        expect_answers(result, load, 2 * ctx.clients, "after the rollout")
        data = load.stop()
    run_ = LoadRun(data)
    after = replica_revisions(stack)
    left = stack.containers("api", stopped=True)
    proxied = proxied_revisions(ctx.refresh_url())
    failed = run_.failed
    failures = [line for line in stderr.splitlines() if line.startswith("rollout: FAILED")]
    exits = [e["t"] for e in stack.docker_events(started, ended, "die", image)]
    result.figures.update(
        clients=ctx.clients,
        exit_code=code,
        rollout_s=round(seconds, 1),
        message=failures[0] if failures else None,
        sent=len(run_.sent),
        failed=len(failed),
        counts=run_.counts(),
        replicas_before=len(before),
        containers_after=len(left),
        revisions_after=after,
        proxied_old=sum(r in set(old.values()) for r in proxied),
        rps=round(run_.rate),
        first_exit=min(exits, default=None),
        started=started,
        ended=ended,
    )
    check_persistence(result, stack, run_, prefix)
    f = result.figures
    result.expect(code != 0, f"rollout.sh exited 0 for {image}")
    result.expect(
        len(failures) == 1 and stderr.strip().splitlines()[-1] == failures[0],
        f"want one last line 'rollout: FAILED: ...', got: {stderr.strip()[-600:]!r}",
    )
    result.expect(not failed, f"{len(failed)} requests failed: {describe(failed)}")
    result.expect(
        left == before and after == old,
        f"replicas after: {after} (containers {len(left)}), want the old ones: {old}",
    )
    result.expect(
        f["proxied_old"] == len(proxied), f"through the proxy: {proxied} (want the old revision)"
    )
    result.summary = (
        f"{ctx.clients} clients: rollout.sh exited {code} after {f['rollout_s']} s with "
        f"{f['message']!r}; sent {f['sent']}, failed {f['failed']}; acked {f['acked']}, in DB "
        f"{f['in_db']}, lost {f['lost']}; the {len(before)} old replicas still serve "
        f"({f['proxied_old']}/{len(proxied)} answers with the old revision, new containers left: "
        f"{len(left) - len(before)})"
    )
    return result
