"""Drill 6: bearer tokens on writes, over HTTP, and production refusing to start without them.

The stack runs with two tokens (rotation) from a secret file (deploy/compose.drills.yml).
Pass: POST/PATCH/DELETE without a token, with a wrong one or with another scheme answer 401
(with ``WWW-Authenticate: Bearer``) and change nothing; either token is accepted; reads need none.
Then the image, run with ENVIRONMENT=production, a real-looking database password and no tokens,
exits non-zero with one clear line naming the problem (no traceback, no secret in the output).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from drills.client import Result, request_once
from drills.common import Context, DrillResult, wait_for
from drills.stack import log

TITLE = "Auth on writes (bearer tokens, rotation) + production refuses to start without tokens"
REFUSAL = "production needs API_TOKENS or API_TOKENS_FILE"
COMPOSE_NOISE = re.compile(r"^\s*(time=|WARN|level=|Container |Network |Volume )")


@pytest.mark.drill(6, TITLE, stage="shared")
def test_auth_on_writes(ctx: Context, result: DrillResult) -> None:
    stack = ctx.stack
    url = ctx.refresh_url()
    token_a, token_b = stack.tokens()[:2]
    name = f"d6-{ctx.run_id}"
    checks = 0

    def call(method: str, path: str, token: str | None = None, body: Any = None,
             scheme: str = "Bearer") -> Result:  # fmt: skip
        headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
        return request_once(url, method, path, body, headers)

    def expect_status(label: str, r: Result, status: int) -> None:
        nonlocal checks
        checks += 1
        result.expect(r.status == status, f"{label}: {r.status or r.outcome.value}, want {status}")
        if status == 401:
            result.expect(
                r.headers.get("www-authenticate", "").lower().startswith("bearer"),
                f"{label}: 401 without WWW-Authenticate: Bearer",
            )

    hero = {"name": name, "secret_name": "s", "age": 30}
    denied = {
        "no token": None,
        "wrong token": secrets.token_urlsafe(24),
        "empty token": "",
    }
    for label, token in denied.items():
        expect_status(f"POST {label}", call("POST", "/heroes/", token, hero), 401)
    expect_status("POST Basic scheme", call("POST", "/heroes/", token_a, hero, "Basic"), 401)
    expect_status(
        "POST token as query", request_once(url, "POST", f"/heroes/?token={token_a}", hero), 401
    )
    created = []
    for label, token in (("token A", token_a), ("token B", token_b)):
        r = call("POST", "/heroes/", token, hero)
        expect_status(f"POST {label}", r, 200)
        if r.status == 200:
            created.append(int(r.json()["id"]))
    if len(created) < 2:
        result.summary = "could not create heroes with the configured tokens"
        return
    first, second = created
    for label, token in denied.items():
        expect_status(f"PATCH {label}", call("PATCH", f"/heroes/{first}", token, {"age": 99}), 401)
        expect_status(f"DELETE {label}", call("DELETE", f"/heroes/{first}", token), 401)
    expect_status("GET list, no token", call("GET", f"/heroes/?name={name}"), 200)
    r = call("GET", f"/heroes/{first}")
    expect_status("GET one, no token", r, 200)
    result.expect(r.status == 200 and r.json().get("age") == 30, "a denied PATCH changed the hero")
    expect_status("PATCH token B", call("PATCH", f"/heroes/{first}", token_b, {"age": 31}), 200)
    expect_status("DELETE token A", call("DELETE", f"/heroes/{second}", token_a), 200)
    expect_status("GET deleted", call("GET", f"/heroes/{second}"), 404)
    listed = call("GET", f"/heroes/?name={name}")
    result.expect(
        listed.status == 200 and [h["id"] for h in listed.json()] == [first],
        f"after the denied writes the heroes named {name} are {listed.body[:200]!r}",
    )
    http_checks = checks

    # --- rotation without a restart: rewrite the secret file in place, SIGHUP gunicorn --------
    # (bind-mounted file: same inode, so the container sees the new content). A is retired,
    # B stays, C is new; gunicorn's reload starts new workers, which must read the file again.
    token_c = secrets.token_urlsafe(32)
    stack.tokens_file.write_text(f"{token_b}\n{token_c}\n")
    log("drill 6: rotation: token file now B + C (A retired), docker compose kill -s HUP api")
    stack.compose("kill", "-s", "HUP", "api")
    rotation = {"name": f"{name}-rot", "secret_name": "s"}

    def rotated() -> bool:
        new_ok = call("POST", "/heroes/", token_c, rotation).status == 200
        return new_ok and call("POST", "/heroes/", token_a, rotation).status == 401

    rotated_after = wait_for(rotated, timeout=20, interval=0.5)
    kept = call("POST", "/heroes/", token_b, rotation).status
    result.expect(
        rotated_after is not None,
        "after rewriting the token file and SIGHUP, the new token was not accepted and the "
        "retired one not refused within 20s (a reload must re-read API_TOKENS_FILE)",
    )
    result.expect(kept == 200, f"the kept token answered {kept} after the rotation")

    # --- production without tokens -----------------------------------------------------------
    password = "drill-" + secrets.token_hex(16)  # not a placeholder: only the tokens are missing
    log("drill 6: the image with ENVIRONMENT=production and no API tokens")
    proc = stack.compose(
        "run", "--rm", "--no-deps", "-T",
        "-e", "ENVIRONMENT=production", "-e", "API_TOKENS=", "-e", "API_TOKENS_FILE=",
        "-e", f"DATABASE_PASSWORD={password}",
        "api", check=False, timeout=120,
    )  # fmt: skip
    output = (proc.stdout or "") + (proc.stderr or "")
    # What the container printed: without compose's own progress and warning lines.
    lines = [
        line for line in output.splitlines()
        if line.strip() and not COMPOSE_NOISE.match(line)
    ]  # fmt: skip
    naming = [line for line in lines if REFUSAL in line]
    leaked = [
        password[i : i + 8] for i in range(len(password) - 7) if password[i : i + 8] in output
    ]  # fmt: skip
    result.figures.update(
        http_checks=http_checks,
        rotation_by_sighup_s=None if rotated_after is None else round(rotated_after, 1),
        tokens=len(stack.tokens()),
        production_exit_code=proc.returncode,
        production_output_lines=len(lines),
        production_line=naming[0][:300] if naming else None,
        traceback="Traceback" in output,
        secret_fragments_in_output=len(leaked),
    )
    f = result.figures
    result.expect(proc.returncode != 0, "production without tokens exited 0")
    result.expect(bool(naming), f"no line says {REFUSAL!r}; output: {output[-1500:]!r}")
    result.expect(
        "Traceback" not in output and len(lines) == 1,
        f"the refusal is {len(lines)} lines{' with a traceback' if 'Traceback' in output else ''}"
        f", not one clear line",
    )
    result.expect(not leaked, "the database password appears (in part) in the refusal output")
    result.summary = (
        f"{http_checks} HTTP checks with {f['tokens']} tokens (401 without/with a wrong token on "
        f"POST/PATCH/DELETE, both tokens accepted, reads open); rotation by SIGHUP (file "
        f"rewritten, no restart): {_secs(f['rotation_by_sighup_s'])}; production without tokens: "
        f"exit {proc.returncode}, {len(lines)} output line(s), traceback {f['traceback']}, "
        f"secret fragments {len(leaked)}"
    )


def _secs(value: float | None) -> str:
    return "not picked up" if value is None else f"new token live after {value:g} s"
