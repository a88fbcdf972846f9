"""Drill 12: TLS with the production override (deploy/compose.production.yml), on a stack of its
own, with a throwaway CA made here with the host's openssl, on non-default ports.

Pass: HTTPS negotiates TLS 1.2+ and ALPN ``h2`` (when the client offers it), the certificate
verifies against the drill's CA; sslyze finds the listener compliant with Mozilla's
"intermediate" profile (protocols, ciphers, curves, vulnerabilities) but for the certificate's
trust (the drill's own CA); plain HTTP answers 301/308 to the same URL on the HTTPS port
(HEROES_HTTPS_PORT); HTTPS answers carry HSTS; nothing internal on the public ports: /metrics
and HAProxy's /stats answer 404 like an unknown path, only 8080 and 8443 are published, while
Prometheus' targets (each replica's :8000/metrics, the proxy's :8404/metrics) answer on the
compose network;
under the mixed load over HTTPS, the certificate file is rewritten with a new certificate and
HAProxy reloaded (SIGUSR2 to its master): new connections present the new certificate, no request
failed (not even a handshake), every acknowledged write readable, the proxy container not
restarted.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from drills.client import request_once
from drills.common import (
    QUEUEING,
    UNLIMITED,
    Context,
    DrillResult,
    LoadRun,
    check_persistence,
    describe,
    expect_answers,
    user_script,
    wait_for,
    warmed_load,
)
from drills.stack import DrillError, Stack, log

TITLE = (
    "TLS: Mozilla intermediate (sslyze), h2, HTTP -> HTTPS port, HSTS, nothing internal public, "
    "certificate swap + reload under load"
)
#: sslyze's check of the profile: the certificate's trust is the one issue a throwaway CA has.
ACCEPTED_ISSUES = {"certificate_path_validation"}
#: Prometheus' targets, from inside the proxy container (no curl there; bash).
EXPORTER = (
    'exec 3<>/dev/tcp/127.0.0.1/8404 && printf "GET /metrics HTTP/1.0\\r\\n\\r\\n" >&3 && '
    "head -n 1 <&3"
)
REPLICA_METRICS = (
    "import urllib.request as r; "
    "print(r.urlopen('http://127.0.0.1:8000/metrics', timeout=5).status)"
)


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise DrillError(f"openssl {args[0]} failed: {proc.stderr.strip()[-400:]}")


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA and two server certificates for 127.0.0.1/localhost (certificate + key PEMs)."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=heroes drill CA", cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    out = {"ca": directory / "ca.pem"}
    for name in ("a", "b"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=heroes drill {name}", cwd=directory)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
                 "-out", f"{name}.crt", cwd=directory)  # fmt: skip
        pem = directory / f"{name}.pem"
        pem.write_bytes(
            (directory / f"{name}.crt").read_bytes() + (directory / f"{name}.key").read_bytes()
        )
        out[name] = pem
    return out


def free_port() -> int:
    """A loopback port nothing listens on now (the stack publishes on it next: HAProxy must know
    its HTTPS port for the redirect, so not an ephemeral one picked by Docker)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mozilla_intermediate(hostport: str) -> tuple[dict[str, str], str]:
    """sslyze's compliance check against Mozilla's "intermediate" profile: its issues (criterion
    -> description; empty = compliant) and the curves the listener accepted."""
    proc = subprocess.run(
        [sys.executable, "-m", "sslyze", "--mozilla_config", "intermediate", hostport],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    out = proc.stdout
    if "COMPLIANCE AGAINST TLS CONFIGURATION" not in out or "ERROR - Scan did not" in out:
        raise DrillError(f"sslyze did not complete: {(out + proc.stderr).strip()[-600:]}")
    compliance = out.split("COMPLIANCE AGAINST TLS CONFIGURATION", 1)[1]
    issues = {
        line.strip()[2:].partition(": ")[0]: line.strip()[2:].partition(": ")[2]
        for line in compliance.splitlines()
        if line.strip().startswith("* ")
    }
    curves = next(
        (line.split(":", 1)[1].strip() for line in out.splitlines() if "Supported curves:" in line),
        "",
    )
    return issues, curves


def handshake(
    url: str, ca: Path, alpn: list[str], maximum: ssl.TLSVersion | None = None
) -> dict[str, str]:
    """One TLS handshake: negotiated version, ALPN protocol and the certificate's serial."""
    host, _, port = url.removeprefix("https://").partition(":")
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(alpn)
    if maximum is not None:
        context.maximum_version = maximum
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        cert = tls.getpeercert() or {}
        return {
            "version": str(tls.version()),
            "alpn": str(tls.selected_alpn_protocol()),
            "serial": str(cert.get("serialNumber")),
        }


@pytest.mark.drill(12, TITLE, stage="own-stack", services=("proxy", "api"))
def test_tls(ctx: Context, result: DrillResult) -> None:
    base = ctx.stack
    directory = Path(tempfile.mkdtemp(prefix="heroes-tls-"))  # 0700
    try:
        pki = make_pki(directory)
        cert = directory / "tls.pem"
        shutil.copyfile(pki["a"], cert)
        password = directory / "db-password"
        password.write_text(secrets.token_urlsafe(24) + "\n")
        for path in (cert, password):
            path.chmod(0o644)  # uids 99 (haproxy) and 999 (postgres) read the bind mounts
        http_port, https_port = free_port(), free_port()
        stack = Stack(
            root=base.root, project=f"{base.project}-tls", image=base.image,
            tokens_file=base.tokens_file,
            files=("docker-compose.yml", "deploy/compose.production.yml"),
            extra_env={
                "HEROES_DB_PASSWORD_FILE": str(password),
                "HEROES_API_TOKENS_FILE": str(base.tokens_file),
                "HEROES_TLS_CERT_FILE": str(cert),
                "HEROES_BIND_ADDRESS": "127.0.0.1",
                "HEROES_HTTP_PORT": str(http_port),
                "HEROES_HTTPS_PORT": str(https_port),
                # production refuses backups on one host (docs/backups.md); this drill is about
                # the edge, so it takes the documented opt-out instead of an object store
                "HEROES_BACKUP_SINGLE_HOST": "accept",
                # its load is 32 closed-loop clients with one token from one address
                **UNLIMITED,
                **QUEUEING,
            },
        )  # fmt: skip
        try:
            _drill(result, ctx, stack, pki, cert)
        finally:
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "40", check=False)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _drill(
    result: DrillResult, ctx: Context, stack: Stack, pki: dict[str, Path], cert: Path
) -> None:
    log(f"drill 12: production stack {stack.project} with TLS")
    t_up = time.monotonic()
    stack.compose("down", "-v", "--remove-orphans", check=False)
    try:
        stack.compose("up", "-d", "--wait", "--wait-timeout", "120", timeout=240)
    except DrillError:
        print(stack.logs(tail=60), flush=True)
        raise
    up_s = time.monotonic() - t_up
    https = stack.url("proxy", 8443, "https")
    http = stack.url("proxy", 8080)
    ca = pki["ca"]
    h2 = handshake(https, ca, ["h2", "http/1.1"])
    tls12 = handshake(https, ca, ["http/1.1"], maximum=ssl.TLSVersion.TLSv1_2)
    redirect = request_once(http, "GET", "/heroes/?limit=1")
    answer = request_once(https, "GET", "/health/live", ca_file=str(ca))
    hsts = answer.headers.get("strict-transport-security", "")
    issues, curves = mozilla_intermediate(https.removeprefix("https://"))
    unknown = request_once(https, "GET", "/no-such-path", ca_file=str(ca))
    internal = {
        path: request_once(https, "GET", path, ca_file=str(ca))
        for path in ("/metrics", "/%6detrics", "/stats", "/metrics?x=1")
    }
    proxy_info = stack.inspect(stack.container("proxy"))
    published = sorted(
        k for k, v in (proxy_info["HostConfig"].get("PortBindings") or {}).items() if v
    )
    exporter = stack.exec_in(stack.container("proxy"), "bash", "-c", EXPORTER).strip()
    replica_metrics = stack.exec_python("api", REPLICA_METRICS).strip()
    proxy_before = stack.inspect(stack.container("proxy"))["State"]["StartedAt"]
    serial_b = _serial(pki["b"])

    prefix = f"d12-{ctx.run_id}"
    tls_ctx = dataclasses.replace(ctx, stack=stack, api_url=https)
    with warmed_load(tls_ctx, prefix, url=https, ca_file=ca) as load:
        log("drill 12: new certificate written in place, deploy/scripts/proxy-reload.sh")
        t_swap = time.monotonic()
        cert.write_bytes(pki["b"].read_bytes())  # same inode: the bind mount sees it
        reload = user_script(stack, "proxy-reload.sh", timeout=60)
        result.expect(reload.returncode == 0, f"proxy-reload.sh: {reload.stderr.strip()}")
        log(f"drill 12: {reload.stdout.strip()}")
        swapped = wait_for(lambda: handshake(https, ca, ["http/1.1"])["serial"] == serial_b,
                           timeout=20, interval=0.2)  # fmt: skip
        swap_s = None if swapped is None else time.monotonic() - t_swap
        expect_answers(result, load, 2 * ctx.clients, "after the reload")
        data = load.stop()
    run_ = LoadRun(data)
    failed = run_.failed
    proxy_after = stack.inspect(stack.container("proxy"))["State"]["StartedAt"]
    result.figures.update(
        stack_up_s=round(up_s, 1),
        h2_handshake=h2,
        tls12_handshake=tls12,
        redirect_status=redirect.status,
        redirect_location=redirect.headers.get("location"),
        hsts=hsts,
        mozilla_intermediate_issues=issues,
        curves=curves,
        internal_paths={path: r.status for path, r in internal.items()},
        published=published,
        internal_exporter=exporter,
        internal_replica_metrics=replica_metrics,
        clients=ctx.clients,
        sent=len(run_.sent),
        failed=len(failed),
        counts=run_.counts(),
        new_cert_served_after_s=None if swap_s is None else round(swap_s, 2),
        proxy_restarted=proxy_after != proxy_before,
        rps=round(run_.rate),
    )
    check_persistence(result, stack, run_, prefix)
    f = result.figures
    result.expect(h2["alpn"] == "h2", f"ALPN negotiated {h2['alpn']!r}, want h2")
    result.expect(
        h2["version"] in ("TLSv1.2", "TLSv1.3") and tls12["version"] == "TLSv1.2",
        f"TLS versions {h2['version']} / {tls12['version']}",
    )
    want_location = f"https://127.0.0.1:{https.rpartition(':')[2]}/heroes/?limit=1"
    result.expect(
        redirect.status in (301, 308) and redirect.headers.get("location") == want_location,
        f"HTTP answered {redirect.status} {redirect.headers.get('location')!r}, want 301/308 to "
        f"{want_location}",
    )
    result.expect("max-age=" in hsts, f"no HSTS on HTTPS answers ({hsts!r})")
    result.expect(
        set(issues) <= ACCEPTED_ISSUES,
        f"sslyze: not compliant with Mozilla intermediate: {issues} (curves {curves})",
    )
    for path, r in internal.items():
        result.expect(
            (r.status, r.body) == (404, unknown.body),
            f"public HTTPS {path}: {r.status} {r.body[:80]!r}, want 404 {unknown.body!r} like "
            "an unknown path",
        )
    result.expect(published == ["8080/tcp", "8443/tcp"], f"proxy publishes {published}")
    result.expect(" 200 " in exporter, f"proxy :8404/metrics inside: {exporter!r}, want 200")
    result.expect(replica_metrics == "200", f"replica :8000/metrics inside: {replica_metrics!r}")
    result.expect(swap_s is not None, "the new certificate was not served within 20 s")
    result.expect(not failed, f"{len(failed)} requests failed: {describe(failed)}")
    result.expect(not f["proxy_restarted"], "the proxy container restarted")
    result.summary = (
        f"own production stack up in {f['stack_up_s']} s; {h2['version']} with ALPN "
        f"{h2['alpn']} (TLS 1.2 also: {tls12['version']}), certificate from the drill's CA; "
        f"sslyze Mozilla intermediate: compliant but for {sorted(issues) or 'nothing'} "
        "(the drill's own CA) "
        f"(curves {curves}); HTTP -> {redirect.status} {f['redirect_location']}; HSTS {hsts!r}; "
        f"public {'/'.join(internal)}: {sorted({r.status for r in internal.values()})}, "
        f"published {published}, internal :8404 and :8000 /metrics 200; {ctx.clients} "
        f"clients over HTTPS: new certificate served {f['new_cert_served_after_s']} s after the "
        f"rewrite + proxy-reload.sh, sent {f['sent']}, failed {f['failed']}; acked {f['acked']}, "
        f"in DB "
        f"{f['in_db']}, lost {f['lost']}; proxy not restarted"
    )


def _serial(pem: Path) -> str:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-serial", "-in", str(pem)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return out.strip().partition("=")[2].upper()
