#!/usr/bin/env python3
"""HTTP smoke checks against a running heroes API (stdlib only: runs on any Python >= 3.11).

    smoke.py BASE_URL wait [--timeout S]   wait until /health/ready answers 200
    smoke.py BASE_URL crud                 full CRUD + docs + health; prints KEPT_ID=<id> of a
                                           hero left in place for `verify`
    smoke.py BASE_URL verify ID            that hero is still there (e.g. after a restart)

A bearer token for writes (when the API has API_TOKENS) comes from SMOKE_API_TOKEN.
Exit status 0 when every check passed, 1 otherwise; every check prints one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

HERO_PUBLIC_KEYS = {"id", "name", "age"}


class CheckFailed(Exception):
    pass


class Client:
    def __init__(self, base_url: str, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 10
    ) -> tuple[int, dict[str, str], bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()

    def json(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, _, raw = self.request(method, path, body)
        if status != expect:
            raise CheckFailed(f"{method} {path}: expected {expect}, got {status}: {raw[:300]!r}")
        return json.loads(raw)


def check(label: str, condition: bool, detail: object = "") -> None:
    if not condition:
        raise CheckFailed(f"{label}: {detail}")
    print(f"ok   {label}")


def check_public(label: str, hero: Any, **expected: Any) -> None:
    check(
        f"{label}: exactly id, name, age (no secret_name)",
        isinstance(hero, dict) and set(hero) == HERO_PUBLIC_KEYS,
        hero,
    )
    for key, value in expected.items():
        check(f"{label}: {key} == {value!r}", hero[key] == value, hero)


def wait_ready(client: Client, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            status, _, raw = client.request("GET", "/health/ready", timeout=3)
            if status == 200:
                print(f"ok   ready: {raw.decode()}")
                return
            last = f"{status} {raw[:200]!r}"
        except OSError as exc:
            last = exc
        time.sleep(0.5)
    raise CheckFailed(f"not ready after {timeout}s: {last}")


def crud(client: Client) -> int:
    live = client.json("GET", "/health/live")
    check(
        "GET /health/live",
        live.get("status") == "ok" and bool(live.get("version")) and bool(live.get("revision")),
        live,
    )
    ready = client.json("GET", "/health/ready")
    check("GET /health/ready", ready.get("status") == "ready", ready)

    status, headers, raw = client.request("GET", "/docs")
    check(
        "GET /docs serves Swagger UI",
        status == 200
        and headers.get("content-type", "").startswith("text/html")
        and b"swagger" in raw.lower(),
        f"{status} {headers.get('content-type')}",
    )
    spec = client.json("GET", "/openapi.json")
    check("GET /openapi.json lists /heroes/", "/heroes/" in spec.get("paths", {}), list(spec))

    created = client.json(
        "POST", "/heroes/", {"name": "Deadpond", "secret_name": "Dive Wilson", "age": 30}
    )
    check_public("POST /heroes/", created, name="Deadpond", age=30)
    hero_id = created["id"]
    check_public(f"GET /heroes/{hero_id}", client.json("GET", f"/heroes/{hero_id}"), age=30)

    listed = client.json("GET", "/heroes/?offset=0&limit=100")
    check("GET /heroes/ is a list", isinstance(listed, list), type(listed))
    check(
        "GET /heroes/: no secret_name in any item",
        all(set(h) == HERO_PUBLIC_KEYS for h in listed),
        listed[:3],
    )
    check("GET /heroes/ contains the new hero", any(h["id"] == hero_id for h in listed), hero_id)

    patched = client.json("PATCH", f"/heroes/{hero_id}", {"age": 31})
    check_public(f"PATCH /heroes/{hero_id} age", patched, name="Deadpond", age=31)
    patched = client.json("PATCH", f"/heroes/{hero_id}", {"secret_name": "Wade"})
    check_public(f"PATCH /heroes/{hero_id} secret_name", patched, name="Deadpond", age=31)

    client.json("POST", "/heroes/", {"name": "No Secret"}, expect=422)
    print("ok   POST /heroes/ without secret_name -> 422")

    deleted = client.json("DELETE", f"/heroes/{hero_id}")
    check(f"DELETE /heroes/{hero_id}", deleted == {"ok": True}, deleted)
    client.json("GET", f"/heroes/{hero_id}", expect=404)
    print(f"ok   GET /heroes/{hero_id} after delete -> 404")
    client.json("DELETE", f"/heroes/{hero_id}", expect=404)
    print(f"ok   DELETE /heroes/{hero_id} again -> 404")

    kept_in = {"name": "Spider-Boy", "secret_name": "Pedro Parqueador"}
    kept = client.json("POST", "/heroes/", kept_in)
    check_public("POST /heroes/ (kept for the restart check)", kept, name="Spider-Boy", age=None)
    print(f"KEPT_ID={kept['id']}")
    return 0


def verify(client: Client, hero_id: int) -> int:
    hero = client.json("GET", f"/heroes/{hero_id}")
    check_public(f"GET /heroes/{hero_id} after restart", hero, name="Spider-Boy", age=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("base_url")
    sub = parser.add_subparsers(dest="command", required=True)
    wait = sub.add_parser("wait")
    wait.add_argument("--timeout", type=float, default=60)
    sub.add_parser("crud")
    ver = sub.add_parser("verify")
    ver.add_argument("hero_id", type=int)
    args = parser.parse_args(argv)

    client = Client(args.base_url, os.environ.get("SMOKE_API_TOKEN") or None)
    try:
        if args.command == "wait":
            wait_ready(client, args.timeout)
            return 0
        if args.command == "crud":
            return crud(client)
        return verify(client, args.hero_id)
    except (CheckFailed, OSError, ValueError, KeyError) as exc:
        print(f"FAIL {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
