"""Drill 7: container posture, from ``docker inspect`` (and /proc inside the api container).

Pass, for every api replica, the proxy and (where it applies) the one-shot migrate container:
non-root user in the config and for every process at run time, read-only root filesystem, all
capabilities dropped and none added, no-new-privileges, not privileged, memory and pids limits;
the api and the proxy have a healthcheck and are healthy; no secret value (database password,
API tokens) in any container's environment, only *_FILE paths. Only the proxy's HTTP port is
published (not its stats/exporter port, no api port).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

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
#: The same for the proxy container (no Python there; bash reads /proc).
PROXY_UIDS = (
    'for f in /proc/[0-9]*/status; do d=${f#/proc/}; echo "${d%/status} '
    '$(grep -E "^(Uid|Gid):" "$f" | cut -f2- | tr "\\t\\n" "  ")"; done'
)


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


def _published(info: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in (info["HostConfig"].get("PortBindings") or {}).items() if v)


def _healthy(result: DrillResult, label: str, info: dict[str, Any]) -> None:
    test = (info["Config"].get("Healthcheck") or {}).get("Test") or []
    result.expect(bool(test) and test[0] != "NONE", f"{label}: no healthcheck")
    status = (info["State"].get("Health") or {}).get("Status")
    result.expect(status == "healthy", f"{label}: health status {status}")


@pytest.mark.drill(7, TITLE, stage="shared", services=("api", "proxy"))
def test_container_posture(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    root = stack.root
    secret_values = [
        (root / "deploy" / "secrets" / "dev-db-password.txt").read_text().strip(),
        *stack.tokens(),
    ]
    replicas = [stack.inspect(c) for c in stack.containers("api")]
    api = replicas[0]
    proxy = stack.inspect(stack.container("proxy"))
    migrate = stack.inspect(stack.container("migrate"))
    for i, replica in enumerate(replicas, 1):
        _check(result, f"api #{i}", replica, secret_values)
        _healthy(result, f"api #{i}", replica)
    _check(result, "proxy", proxy, secret_values)
    _healthy(result, "proxy", proxy)
    _check(result, "migrate", migrate, secret_values)
    test = (api["Config"].get("Healthcheck") or {}).get("Test") or []
    status = (api["State"].get("Health") or {}).get("Status")

    uids: dict[str, list[int]] = json.loads(stack.exec_python("api", UIDS))
    ids = sorted({i for v in uids.values() for i in v})
    result.expect(bool(uids) and 0 not in ids, f"api: a process runs with uid/gid 0: {uids}")
    proxy_uids = {
        line.split()[0]: [int(x) for x in line.split()[1:]]
        for line in stack.exec_in(proxy["Id"], "bash", "-c", PROXY_UIDS).splitlines()
        if len(line.split()) > 1
    }
    proxy_ids = sorted({i for v in proxy_uids.values() for i in v})
    result.expect(
        bool(proxy_uids) and 0 not in proxy_ids,
        f"proxy: a process runs with uid/gid 0: {proxy_uids}",
    )
    published = {c["Name"].lstrip("/"): _published(c) for c in [*replicas, proxy]}
    result.expect(
        published.pop(proxy["Name"].lstrip("/")) == ["8080/tcp"],
        "proxy: publishes more or other than its HTTP port 8080",
    )
    result.expect(not any(published.values()), f"api replicas publish ports: {published}")

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
        replicas=len(replicas),
        proxy_user=proxy["Config"].get("User"),
        proxy_runtime_ids=proxy_ids,
        proxy_memory_mb=int(proxy["HostConfig"].get("Memory") or 0) // 2**20,
        proxy_pids_limit=proxy["HostConfig"].get("PidsLimit"),
        env_secret_values=0 if result.passed else None,
        migrate_checked=True,
    )
    f = result.figures
    result.summary = (
        f"{f['replicas']} api replicas: user {f['user']} (processes: uid/gid {ids}), read-only "
        f"rootfs {f['read_only']}, cap_drop {f['cap_drop']}, {','.join(f['security_opt'] or [])}, "
        f"mem {f['memory_mb']} MiB, pids {f['pids_limit']}, cpus {f['cpus']:g}, healthcheck "
        f"{f['health']}, no published port; proxy: user {f['proxy_user']} (processes: uid/gid "
        f"{proxy_ids}), same hardening, mem {f['proxy_memory_mb']} MiB, pids "
        f"{f['proxy_pids_limit']}, healthy, only :8080 published (stats/exporter not); "
        f"secret values in env: none (api, proxy, migrate)"
    )
    if not result.passed:
        result.summary = result.summary.replace("none (api, proxy, migrate)", "see failures")
