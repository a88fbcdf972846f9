"""The monitoring profile's default Alertmanager receivers: one JSON line per alert on stdout.

Alertmanager POSTs its webhook payload (version 4) to http://alert-log:9095/<path> (``page``,
``ticket``; ``alerts`` too, the older path); each alert in it becomes a line ``{"ts", "path",
"receiver", "status", "alertname", "severity", "instance", "startsAt", "endsAt", "summary"}`` that
``docker compose logs alert-log`` (or a log shipper) shows.

It is also the local stand-in of a heartbeat service (healthchecks.io, a PagerDuty or Opsgenie
heartbeat): POSTs to ``/heartbeat`` are the pings, and when none came for HEARTBEAT_TIMEOUT
seconds (120: Alertmanager's 1-minute repeat plus one) it logs ``{"heartbeat": "missing"}``
once, then ``{"heartbeat": "back"}`` at the next ping. A real one pages from another host.
Standard library only: it runs on the plain python image. Production points the receivers'
secret files at real services (docs/observability.md, "Routing").
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 1 << 20
PATHS = ("/alerts", "/page", "/ticket", "/heartbeat")


def stamp() -> str:
    now = time.time()
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{int(now * 1000) % 1000:03d}Z"


def lines(payload: dict[str, Any], path: str = "/alerts") -> list[str]:
    out = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        out.append(json.dumps({
            "ts": stamp(),
            "path": path,
            "receiver": payload.get("receiver"),
            "status": alert.get("status"),
            "alertname": labels.get("alertname"),
            "severity": labels.get("severity"),
            "instance": labels.get("instance"),
            "startsAt": alert.get("startsAt"),
            "endsAt": alert.get("endsAt"),
            "summary": alert.get("annotations", {}).get("summary"),
        }, separators=(",", ":")))  # fmt: skip
    return out


class Heartbeat:
    """The last ping, and whether its absence was already reported."""

    def __init__(self, timeout: float) -> None:
        self.timeout, self.last, self.missing = timeout, 0.0, False
        self.lock = threading.Lock()

    def ping(self) -> None:
        with self.lock:
            if not self.last:
                print(json.dumps({"ts": stamp(), "heartbeat": "started"}), flush=True)
            self.last = time.monotonic()
            if self.missing:
                self.missing = False
                print(json.dumps({"ts": stamp(), "heartbeat": "back"}), flush=True)

    def check(self) -> None:
        with self.lock:
            late = self.last and time.monotonic() - self.last > self.timeout
            if late and not self.missing:
                self.missing = True
                late_s = round(time.monotonic() - self.last, 1)
                event = {"ts": stamp(), "heartbeat": "missing", "seconds": late_s}
                print(json.dumps(event), flush=True)

    def watch(self) -> None:
        while True:
            time.sleep(1)
            self.check()


HEARTBEAT = Heartbeat(float(os.environ.get("HEARTBEAT_TIMEOUT", "120")))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.path not in PATHS or not 0 < length <= MAX_BODY:
            self.send_error(404 if self.path not in PATHS else 413)
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400)
            return
        if self.path == "/heartbeat":
            HEARTBEAT.ping()  # a line per minute would drown the alerts: state changes only
        else:
            for line in lines(payload, self.path):
                print(line, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # healthcheck
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per alert, not one per request


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1: stop at once on `compose stop`
    threading.Thread(target=HEARTBEAT.watch, daemon=True).start()
    ThreadingHTTPServer(("0.0.0.0", 9095), Handler).serve_forever()


if __name__ == "__main__":
    main()
