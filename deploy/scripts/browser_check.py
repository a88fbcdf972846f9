#!/usr/bin/env python3
"""/docs and /redoc in a real browser with no network but loopback (deploy/scripts/browser-test.sh).

Starts the production server (`heroes migrate`, then `gunicorn -c deploy/gunicorn.conf.py`, 2
workers, SQLite, API tokens set) and headless Chromium whose every host but 127.0.0.1 resolves
to nothing and whose proxy leads nowhere; drives it over the DevTools protocol. Checks:

1. the blocking works: a CDN asset (the one FastAPI's default /docs loads) fails to load;
2. Swagger UI and ReDoc render every operation of the served schema, "Authorize" included;
   every request of both pages went to the app itself and got a 2xx;
3. "Authorize" + "Try it out" create a hero from the page (201-free tutorial API: 200);
4. negative control: with one asset unavailable, the page check fails.

Screenshots and the pages' sizes (bytes of each page and its assets) go to --out.
Exit status 0 when every check passed; every check prints one line.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from harness.gunicorn import migrate, production

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOKEN = "browser-test-token-0123456789"
#: What FastAPI's own /docs page loads: must be unreachable from this browser.
CDN_ASSET = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--window-size=1280,900",
    # No network but loopback: no name resolves but 127.0.0.1, and any other connection goes
    # to a proxy that is not there (port 9, discard: nothing listens).
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
]


RECORD_CSP_VIOLATIONS = """document.addEventListener('securitypolicyviolation', e =>
  (window.__csp = window.__csp || [])
    .push({blocked: e.blockedURI, directive: e.violatedDirective}));"""


class CheckFailed(Exception):
    pass


def log(message: str) -> None:
    print(f"browser-test: {message}", flush=True)


def wait_until(what: str, test: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@contextmanager
def production_server(workdir: Path) -> Iterator[str]:
    """`gunicorn -c deploy/gunicorn.conf.py` on SQLite with tokens (harness.gunicorn); its base
    URL."""
    server = production(
        workdir, workers=2, key="gunicorn", ENVIRONMENT="development",
        DATABASE_URL=f"sqlite:///{workdir / 'heroes.db'}", API_TOKENS=TOKEN,
        LOG_LEVEL="warning", DOCS_ENABLED="true",
    )  # fmt: skip
    migrate(server)
    try:
        server.start(timeout=60)
    except RuntimeError as exc:
        raise CheckFailed(str(exc)) from exc
    try:
        assert server.process is not None
        log(f"ok: gunicorn -c deploy/gunicorn.conf.py serving on {server.url} "
            f"(pid {server.process.pid})")  # fmt: skip
        yield server.url
    finally:
        server.stop()


@dataclass
class Page:
    """One browser tab over the DevTools protocol, with the network events it saw."""

    ws: ClientConnection
    next_id: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise CheckFailed(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)  # fmt: skip
        if "exceptionDetails" in result:
            raise CheckFailed(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, what: str, expression: str, timeout: float = 30) -> None:
        wait_until(what, lambda: bool(self.evaluate(expression)), timeout)

    def goto(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)

    def requests(self) -> dict[str, dict[str, Any]]:
        """requestId -> {url, status, bytes, failed} of what this page loaded since goto."""
        seen: dict[str, dict[str, Any]] = {}
        for event in self.events:
            params = event["params"]
            entry = seen.setdefault(params.get("requestId", ""), {"bytes": 0})
            if event["method"] == "Network.requestWillBeSent":
                entry["url"] = params["request"]["url"]
            elif event["method"] == "Network.responseReceived":
                entry["status"] = params["response"]["status"]
            elif event["method"] == "Network.loadingFinished":
                entry["bytes"] = int(params["encodedDataLength"])
            elif event["method"] == "Network.loadingFailed":
                entry["failed"] = params.get("errorText") or params.get("blockedReason")
                entry["blocked"] = params.get("blockedReason")
        return {key: value for key, value in seen.items() if "url" in value}

    def screenshot(self, path: Path) -> None:
        height = self.evaluate("document.documentElement.scrollHeight") or 900
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=min(int(height), 8000),
                  deviceScaleFactor=1, mobile=False)  # fmt: skip
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        self.call("Emulation.clearDeviceMetricsOverride")


@contextmanager
def chromium(executable: str, workdir: Path) -> Iterator[Page]:
    profile = workdir / "profile"
    process = subprocess.Popen(
        [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=(workdir / "chromium.log").open("wb"),
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"
        wait_until("Chromium's DevTools port", port_file.exists, 60)
        port = port_file.read_text().split()[0]
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", trust_env=False).json()
        [target] = [t for t in targets if t["type"] == "page"]
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            page = Page(ws)
            page.call("Page.enable")
            page.call("Network.enable")
            page.call("Network.setCacheDisabled", cacheDisabled=True)  # full sizes every time
            page.call("Page.addScriptToEvaluateOnNewDocument", source=RECORD_CSP_VIOLATIONS)
            yield page
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_network_is_blocked(page: Page) -> None:
    page.goto(CDN_ASSET)
    wait_until("the CDN request to end", lambda: any(
        e["method"] in {"Network.loadingFailed", "Network.loadingFinished"} for e in page.events
    ), 30)  # fmt: skip
    failed = [r for r in page.requests().values() if r.get("failed")]
    if not failed or any(r.get("status") for r in page.requests().values()):
        raise CheckFailed(f"the browser reached {CDN_ASSET}: the network is not blocked")
    log(f"ok: no network but loopback ({CDN_ASSET} -> {failed[0]['failed']})")


def _all_present(selectors: list[str]) -> str:
    return f"{json.dumps(selectors)}.every(s => document.querySelector(s) !== null)"


def check_page(
    page: Page,
    base: str,
    path: str,
    selectors: list[str],
    summaries: list[str],
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """Load the page; every selector and operation summary must appear, every request must be
    the app's own and succeed. Returns the page's requests."""
    page.goto(base + path)
    try:
        page.wait_for(f"{path} to render every operation", _all_present(selectors), timeout)
    except CheckFailed as exc:
        failed = [r["url"] for r in page.requests().values()
                  if r.get("failed") or r.get("status", 0) >= 400]  # fmt: skip
        raise CheckFailed(f"{path}: {exc}; failed requests: {failed}") from None
    text = page.evaluate("document.body.innerText") or ""
    missing = [summary for summary in summaries if summary not in text]
    if missing:
        raise CheckFailed(f"{path}: operations not shown: {missing}")
    time.sleep(0.5)  # let the last responses finish (favicon)
    page.call("Runtime.evaluate", expression="1")  # drain pending events
    # The policy may refuse an image from elsewhere (ReDoc's logo), nothing the page needs.
    broken = [v for v in page.evaluate("window.__csp || []")
              if v["directive"] != "img-src" or v["blocked"].startswith(base)]  # fmt: skip
    if broken:
        raise CheckFailed(f"{path}: Content-Security-Policy violations: {broken}")
    requests = list(page.requests().values())
    foreign = [r for r in requests if not r["url"].startswith((base, "data:", "blob:"))]
    # Refused by the page's Content-Security-Policy: the request never left the browser.
    sent = [r["url"] for r in foreign if r.get("blocked") != "csp"]
    if sent:
        raise CheckFailed(f"{path}: requests to other hosts: {sent}")
    for request in foreign:
        log(f"{path}: {request['url']} refused by the page's Content-Security-Policy")
    own = [r for r in requests if r["url"].startswith(base)]
    bad = [r for r in own if r.get("failed") or not 200 <= r.get("status", 0) < 300]
    if bad:
        raise CheckFailed(f"{path}: failed requests: {bad}")
    return own


# Swagger UI: React inputs take a value only through the native setter plus an input event.
SET_VALUE = """(sel, value) => { const el = document.querySelector(sel);
  const proto = el.tagName === 'TEXTAREA' ? HTMLTextAreaElement : HTMLInputElement;
  Object.getOwnPropertyDescriptor(proto.prototype, 'value').set.call(el, value);
  el.dispatchEvent(new Event('input', {bubbles: true})); return true; }"""


def check_authorize_and_try_it_out(page: Page, out: Path) -> str:
    click = "(sel => { const el = document.querySelector(sel); el.click(); return true; })"
    page.evaluate(f"{click}('button.authorize')")
    page.wait_for("the Authorize dialog", "!!document.querySelector('.modal-ux input')")
    page.evaluate(f"({SET_VALUE})('.modal-ux input', {json.dumps(TOKEN)})")
    page.evaluate(f"{click}('.modal-ux .auth-btn-wrapper button.authorize')")
    logout = ".modal-ux button[aria-label='Remove authorization']"
    page.wait_for("the token to be taken", f'!!document.querySelector("{logout}")')
    page.evaluate(f"{click}('.modal-ux button.btn-done')")
    post = "#operations-heroes-create_hero_heroes__post"
    page.evaluate(f"{click}('{post} .opblock-summary-control')")
    page.wait_for("Try it out", f"!!document.querySelector('{post} .try-out__btn')")
    page.evaluate(f"{click}('{post} .try-out__btn')")
    page.wait_for(
        "the request body editor", f"!!document.querySelector('{post} textarea.body-param__text')"
    )
    body = json.dumps({"name": "Browser Hero", "secret_name": "Chromium", "age": 7})
    page.evaluate(f"({SET_VALUE})('{post} textarea.body-param__text', {json.dumps(body)})")
    page.evaluate(f"{click}('{post} button.execute')")
    status = f"document.querySelector('{post} .live-responses-table tbody .response-col_status')"
    page.wait_for("the live response", f"!!{status}")
    answer = str(page.evaluate(f"{status}.innerText")).strip()
    shown = str(page.evaluate(f"document.querySelector('{post} .live-responses-table').innerText"))
    page.screenshot(out / "docs-try-it-out.png")
    if not answer.startswith("200") or "Browser Hero" not in shown:
        raise CheckFailed(f"POST /heroes/ from Swagger UI answered {answer!r}: {shown[:300]}")
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "chromium"))
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "screenshots")
    args = parser.parse_args(argv)
    executable = shutil.which(args.chromium)
    if not executable:
        print(f"browser-test: no {args.chromium} on PATH", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="heroes-browser-") as tmp:
        workdir = Path(tmp)
        try:
            with production_server(workdir) as base, chromium(executable, workdir) as page:
                schema = httpx.get(f"{base}/openapi.json", trust_env=False).json()
                operations = [op for item in schema["paths"].values() for op in item.values()]
                ids = [(op["tags"][0], op["operationId"]) for op in operations]
                summaries = [op["summary"] for op in operations]
                check_network_is_blocked(page)

                swagger = [f"#operations-{tag}-{i}" for tag, i in ids] + ["button.authorize"]
                sizes["/docs"] = check_page(page, base, "/docs", swagger, summaries)
                page.screenshot(args.out / "docs.png")
                log(f"ok: /docs renders {len(ids)} operations and Authorize, assets all local")

                answer = check_authorize_and_try_it_out(page, args.out)
                log(f"ok: /docs Authorize + Try it out: POST /heroes/ answered {answer}")

                redoc = [f'[id="tag/{tag}/operation/{i}"]' for tag, i in ids]
                sizes["/redoc"] = check_page(page, base, "/redoc", redoc, summaries)
                page.screenshot(args.out / "redoc.png")
                log(f"ok: /redoc renders {len(ids)} operations, assets all local")

                for path, selectors, asset in [
                    ("/docs", swagger, "swagger-ui-bundle.js"),
                    ("/redoc", redoc, "redoc.standalone.js"),
                ]:
                    page.call("Network.setBlockedURLs", urls=[f"*/docs/static/{asset}"])
                    try:
                        check_page(page, base, path, selectors, summaries, timeout=10)
                    except CheckFailed as exc:
                        if asset not in str(exc):
                            raise
                        log(f"ok: negative control: {path} without {asset} fails: {exc}")
                    else:
                        raise CheckFailed(
                            f"{path} passed without {asset}: the check proves nothing"
                        )
                    finally:
                        page.call("Network.setBlockedURLs", urls=[])
        except CheckFailed as exc:
            print(f"browser-test: FAILED: {exc}", file=sys.stderr)
            for name in ("gunicorn.log", "chromium.log"):
                text = (
                    (workdir / name).read_text(errors="replace")
                    if (workdir / name).exists()
                    else ""
                )
                print(f"--- {name} (tail)\n{text[-3000:]}", file=sys.stderr)
            return 1
    write_sizes(args.out, sizes)
    return 0


def write_sizes(out: Path, sizes: dict[str, list[dict[str, Any]]]) -> None:
    lines = ["| page | request | bytes |", "| --- | --- | --: |"]
    for page, requests in sizes.items():
        for request in requests:
            path = "/" + request["url"].split("/", 3)[-1]
            lines.append(f"| {page} | `{path}` | {request['bytes']:,} |")
        total = sum(r["bytes"] for r in requests)
        lines.append(f"| {page} | **total** | **{total:,}** |")
        log(f"{page}: {len(requests)} requests, {total:,} bytes (page + assets + schema)")
    (out / "page-sizes.md").write_text("\n".join(lines) + "\n")
    log(f"screenshots and page-sizes.md in {out}")


if __name__ == "__main__":
    sys.exit(main())
