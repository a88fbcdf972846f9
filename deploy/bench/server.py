"""A gunicorn server under test (harness.gunicorn): started until it serves heroes, checked
against the wire contract."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

from bench import apps
from harness.gunicorn import GunicornServer
from harness.procs import ProcessRegistry


def http_request(
    port: int, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 5.0
) -> tuple[int, Any]:
    """One request on a fresh connection; redirects are not followed (a 3xx is a failure)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")


def answers(port: int) -> bool:
    try:
        status, _ = http_request(port, "GET", "/heroes/1", timeout=2.0)
    except OSError:
        return False
    return status == 200


def serve(spec: apps.AppSpec, workdir: Path, registry: ProcessRegistry) -> GunicornServer:
    """``spec``'s gunicorn, started: every worker forked and GET /heroes/1 answered by each."""
    server = GunicornServer(
        spec.argv, spec.env, cwd=spec.cwd, port=spec.port, logfile=workdir / f"{spec.key}.log",
        workers=apps.WORKERS, key=spec.key, registry=registry,
    )  # fmt: skip
    server.start(lambda: answers(spec.port), timeout=90)
    # Both workers have forked; give the slower one a moment to finish its lifespan startup.
    time.sleep(1.0)
    for _ in range(2 * apps.WORKERS):
        if not answers(spec.port):
            server.stop()
            raise RuntimeError(f"{spec.key}: /heroes/1 stopped answering\n{server.log_tail()}")
    return server


def preflight(server: GunicornServer, seeded: int) -> None:
    """The three request shapes wrk sends must answer 2xx with the tutorial's bodies."""
    key, port = server.key, server.port
    status, body = http_request(port, "GET", "/heroes/1")
    if status != 200 or not isinstance(body, dict) or body.get("id") != 1:
        raise RuntimeError(f"{key}: GET /heroes/1 -> {status} {body!r}")
    status, body = http_request(port, "GET", f"/heroes/{seeded}")
    if status != 200:
        raise RuntimeError(f"{key}: GET /heroes/{seeded} -> {status} {body!r}")
    status, body = http_request(port, "GET", "/heroes/?offset=0&limit=100")
    if status != 200 or not isinstance(body, list) or len(body) != 100:
        raise RuntimeError(f"{key}: GET /heroes/?limit=100 -> {status} {str(body)[:200]}")
    hero = {"name": "preflight", "secret_name": "preflight", "age": 1}
    status, body = http_request(port, "POST", "/heroes/", hero)
    if status // 100 != 2 or not isinstance(body, dict) or "id" not in body:
        raise RuntimeError(f"{key}: POST /heroes/ -> {status} {body!r}")
