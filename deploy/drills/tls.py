"""Drill 12: TLS with the production override (deploy/compose.production.yml), on a stack of its
own, with a throwaway CA made here with the host's openssl.

Pass: HTTPS negotiates TLS 1.2+ and ALPN ``h2`` (when the client offers it), the certificate
verifies against the drill's CA; plain HTTP answers 301/308 to https://; HTTPS answers carry HSTS;
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
import tempfile
import time
from pathlib import Path

from drills.client import request_once
from drills.common import (
    Context,
    DrillResult,
    LoadRun,
    check_persistence,
    describe,
    user_script,
    wait_for,
    warmed_load,
)
from drills.stack import DrillError, Stack, log

TITLE = "TLS: h2, HTTP -> HTTPS, HSTS, certificate swap + reload under load"


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


def run(ctx: Context) -> DrillResult:
    result = DrillResult(12, TITLE, services=("proxy", "api"))
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
        stack = Stack(
            root=base.root, project=f"{base.project}-tls", image=base.image,
            tokens_file=base.tokens_file,
            files=("docker-compose.yml", "deploy/compose.production.yml"),
            extra_env={
                "HEROES_DB_PASSWORD_FILE": str(password),
                "HEROES_API_TOKENS_FILE": str(base.tokens_file),
                "HEROES_TLS_CERT_FILE": str(cert),
                "HEROES_BIND_ADDRESS": "127.0.0.1",
                "HEROES_HTTP_PORT": "0",
                "HEROES_HTTPS_PORT": "0",
            },
        )  # fmt: skip
        try:
            _drill(result, ctx, stack, pki, cert)
        finally:
            stack.compose("down", "-v", "--remove-orphans", "--timeout", "40", check=False)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return result


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
        time.sleep(3.0)
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
    result.expect(
        redirect.status in (301, 308)
        and str(redirect.headers.get("location", "")).startswith("https://"),
        f"HTTP answered {redirect.status} {redirect.headers.get('location')!r}, want 301/308 to "
        "https://",
    )
    result.expect("max-age=" in hsts, f"no HSTS on HTTPS answers ({hsts!r})")
    result.expect(swap_s is not None, "the new certificate was not served within 20 s")
    result.expect(not failed, f"{len(failed)} requests failed: {describe(failed)}")
    result.expect(not f["proxy_restarted"], "the proxy container restarted")
    result.summary = (
        f"own production stack up in {f['stack_up_s']} s; {h2['version']} with ALPN "
        f"{h2['alpn']} (TLS 1.2 also: {tls12['version']}), certificate from the drill's CA; "
        f"HTTP -> {redirect.status} {f['redirect_location']}; HSTS {hsts!r}; {ctx.clients} "
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
