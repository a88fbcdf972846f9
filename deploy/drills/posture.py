"""Drill 7: container posture, from ``docker inspect`` (and /proc inside the api container).

Pass, for the api (and, where it applies, the one-shot migrate) container: non-root user in the
config and for every process at run time, read-only root filesystem, all capabilities dropped and
none added, no-new-privileges, not privileged, memory and pids limits; the api has a healthcheck
and is healthy; no secret value (database password, API tokens) in any container's environment,
only *_FILE paths.
"""

from __future__ import annotations

import json
import re
from typing import Any

from drills.common import Context, DrillResult

TITLE = "Container posture (docker inspect)"
SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET|PRIVATE|CREDENTIAL|API_KEY", re.IGNORECASE)

UIDS = """
import json, os
uids = {}
for d in os.listdir('/proc'):
    if d.isdigit() and int(d) != os.getpid():
        try:
            status = open(f'/proc/{d}/status').read()
        except OSError:
            continue
        fields = dict(line.split(':', 1) for line in status.splitlines() if ':' in line)
        uids[d] = [int(x) for x in fields['Uid'].split()] + [int(x) for x in fields['Gid'].split()]
print(json.dumps(uids))
"""


def _env(info: dict[str, Any]) -> dict[str, str]:
    # compose passes a variable listed without a value as a bare NAME
    pairs = (item.partition("=") for item in info["Config"].get("Env") or [])
    return {name: value for name, _, value in pairs}


def _check(result: DrillResult, label: str, info: dict[str, Any], secrets: list[str]) -> None:
    host = info["HostConfig"]
    user = info["Config"].get("User") or ""
    uid = user.split(":", 1)[0]
    result.expect(uid not in {"", "0", "root"}, f"{label}: runs as user {user!r}")
    result.expect(host.get("ReadonlyRootfs") is True, f"{label}: root filesystem is writable")
    cap_drop = [c.upper() for c in host.get("CapDrop") or []]
    result.expect("ALL" in cap_drop, f"{label}: cap_drop is {cap_drop}, want ALL")
    result.expect(not host.get("CapAdd"), f"{label}: capabilities added: {host.get('CapAdd')}")
    result.expect(
        any(opt.startswith("no-new-privileges") for opt in host.get("SecurityOpt") or []),
        f"{label}: no-new-privileges missing ({host.get('SecurityOpt')})",
    )
    result.expect(not host.get("Privileged"), f"{label}: privileged")
    result.expect(int(host.get("Memory") or 0) > 0, f"{label}: no memory limit")
    result.expect(int(host.get("PidsLimit") or 0) > 0, f"{label}: no pids limit")
    env = _env(info)
    named = [k for k, v in env.items() if SECRETISH.search(k) and not k.endswith("_FILE") and v]
    result.expect(not named, f"{label}: secret-looking variables with values: {named}")
    holders = sorted(k for k, v in env.items() for s in secrets if s and s in v)
    result.expect(not holders, f"{label}: secret values in the environment: {holders}")
    url = env.get("DATABASE_URL", "")
    result.expect(
        not re.search(r"://[^/@]*:[^/@]*@", url), f"{label}: DATABASE_URL carries a password"
    )


def run(ctx: Context) -> DrillResult:
    result = DrillResult(7, TITLE)
    stack = ctx.stack
    root = stack.root
    secret_values = [
        (root / "deploy" / "secrets" / "dev-db-password.txt").read_text().strip(),
        *stack.tokens(),
    ]
    api = stack.inspect(stack.container("api"))
    migrate = stack.inspect(stack.container("migrate"))
    _check(result, "api", api, secret_values)
    _check(result, "migrate", migrate, secret_values)

    health = api["Config"].get("Healthcheck") or {}
    test = health.get("Test") or []
    result.expect(bool(test) and test[0] != "NONE", "api: no healthcheck")
    status = (api["State"].get("Health") or {}).get("Status")
    result.expect(status == "healthy", f"api: health status {status}")

    uids: dict[str, list[int]] = json.loads(stack.exec_python("api", UIDS))
    ids = sorted({i for v in uids.values() for i in v})
    result.expect(bool(uids) and 0 not in ids, f"api: a process runs with uid/gid 0: {uids}")

    host = api["HostConfig"]
    result.figures.update(
        user=api["Config"].get("User"),
        runtime_ids=ids,
        processes=len(uids),
        read_only=host.get("ReadonlyRootfs"),
        cap_drop=host.get("CapDrop"),
        security_opt=host.get("SecurityOpt"),
        memory_mb=int(host.get("Memory") or 0) // 2**20,
        pids_limit=host.get("PidsLimit"),
        cpus=(host.get("NanoCpus") or 0) / 1e9,
        healthcheck=" ".join(test)[:80],
        health=status,
        env_secret_values=0 if result.passed else None,
        migrate_checked=True,
    )
    f = result.figures
    result.summary = (
        f"user {f['user']} (processes: uid/gid {ids}), read-only rootfs {f['read_only']}, "
        f"cap_drop {f['cap_drop']}, {','.join(f['security_opt'] or [])}, mem {f['memory_mb']} MiB, "
        f"pids {f['pids_limit']}, cpus {f['cpus']:g}, healthcheck {f['health']}, "
        f"secret values in env: none (api, migrate)"
    )
    if not result.passed:
        result.summary = result.summary.replace("none (api, migrate)", "see failures")
    return result
