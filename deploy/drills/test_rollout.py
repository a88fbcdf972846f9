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
"""

from __future__ import annotations

import time

import pytest

from drills.common import (
    Context,
    DrillResult,
    LoadRun,
    check_persistence,
    derived_image,
    describe,
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
#: Drill 19: from the first exit of a new replica to the script's end, at most.
CRASH_GIVE_UP_S = 20


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
        time.sleep(1.0)
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
    given_up = None if first_exit is None or ended is None else round(ended - first_exit, 1)
    result.figures["given_up_after_first_exit_s"] = given_up
    result.expect(first_exit is not None, "no new replica exited: was the image broken at all?")
    result.expect(
        given_up is not None and given_up <= CRASH_GIVE_UP_S,
        f"rollout.sh ended {given_up} s after the first exit of a new replica",
    )
    result.summary += f"; gave up {given_up} s after the first exit of a new replica"


def _failed_rollout(
    ctx: Context, result: DrillResult, image: str, rollout_timeout: int | None = None
) -> DrillResult:
    """A rollout to ``image`` that must fail, leaving the old replicas serving."""
    stack = ctx.stack
    prefix = f"d{result.number}-{ctx.run_id}"
    before = stack.containers("api")
    old = replica_revisions(stack)
    with warmed_load(ctx, prefix) as load:
        env = {} if rollout_timeout is None else {"ROLLOUT_TIMEOUT": str(rollout_timeout)}
        log(f"drill {result.number}: rollout.sh {image} {env}")
        started = time.time()
        code, stderr, seconds = rollout(stack, image, **env)
        ended = time.time()
        time.sleep(1.0)
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
