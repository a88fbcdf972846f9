"""The monitoring profile's default Alertmanager receiver: one JSON line per alert on stdout.

Alertmanager POSTs its webhook payload (version 4) to http://alert-log:9095/alerts; each alert in
it becomes a line ``{"ts", "receiver", "status", "alertname", "severity", "instance",
"startsAt", "endsAt", "summary"}`` that ``docker compose logs alert-log`` (or a log shipper)
shows. Standard library only: it runs on the plain python image. Replace its URL in
deploy/alertmanager/alertmanager.yml with a real receiver in production.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 1 << 20


def lines(payload: dict[str, Any]) -> list[str]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    out = []
    for alert in payload.get("alerts", []):
        labels = alert.get("labels", {})
        out.append(json.dumps({
            "ts": f"{stamp}.{int(time.time() * 1000) % 1000:03d}Z",
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


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != "/alerts" or not 0 < length <= MAX_BODY:
            self.send_error(404 if self.path != "/alerts" else 413)
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400)
            return
        for line in lines(payload):
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
    ThreadingHTTPServer(("0.0.0.0", 9095), Handler).serve_forever()


if __name__ == "__main__":
    main()
