"""A small HTTP/1.1 client that records what really happened to each request (stdlib only).

urllib and http.client fold very different events into the same exceptions. A drill must tell
them apart, because only some of them are misses:

- ``not_sent``: the connection could not be opened (refused, unreachable, no such host, connect
  timeout). The request never left the client, so the server cannot have acted on it: after a
  listener is gone this is the expected, clean answer.
- ``send_failed``: the connection broke while the request was being written (reset by the peer).
- ``dropped``: the request was fully written, then the connection was closed or reset before a
  single response byte arrived: an in-flight request was lost (the server may or may not have
  committed it).
- ``partial``: some response bytes, then the connection broke.
- ``timeout``: fully written, no complete response within the read timeout.
- ``2xx`` / ``4xx`` / ``5xx`` (``other`` for anything else): a complete HTTP response.

A keep-alive connection is checked before reuse: if the server closed it while it sat idle
(readable with EOF), a new one is opened instead of writing a request into a dead socket, as
urllib3 does. That race (server closes an idle connection at the moment the client reuses it)
is a property of HTTP/1.1, not of the server; the ``fresh`` flag on each result tells whether the
request went out on a new connection.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "MISSES",
    "Connection",
    "Outcome",
    "Result",
    "request_once",
    "split_url",
    "tls_context",
]


class Outcome(StrEnum):
    OK = "2xx"
    CLIENT_ERROR = "4xx"
    SERVER_ERROR = "5xx"
    OTHER = "other"
    NOT_SENT = "not_sent"
    SEND_FAILED = "send_failed"
    DROPPED = "dropped"
    PARTIAL = "partial"
    TIMEOUT = "timeout"


#: Transport failures of a request that had (at least partly) been sent: never acceptable.
MISSES = frozenset({Outcome.SEND_FAILED, Outcome.DROPPED, Outcome.PARTIAL, Outcome.TIMEOUT})


@dataclass
class Result:
    outcome: Outcome
    status: int = 0
    started: float = 0.0  # wall clock (time.time()): comparable across processes and containers
    sent: float | None = None  # wall clock when the whole request had been written
    ended: float = 0.0
    latency: float = 0.0  # seconds, monotonic
    fresh: bool = False  # went out on a connection opened for it
    error: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def is_json(self) -> bool:
        if not self.headers.get("content-type", "").startswith("application/json"):
            return False
        try:
            json.loads(self.body)
        except ValueError:
            return False
        return True


def split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"need an http(s)://host[:port] URL, got {url!r}")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def tls_context(url: str, ca_file: str | None = None) -> ssl.SSLContext | None:
    """For an https:// URL: a verifying client context (trusting ca_file when given)."""
    if not url.startswith("https://"):
        return None
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])  # this client speaks HTTP/1.1 only
    return context


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    errno = getattr(exc, "errno", None)
    return f"{name}({errno})" if errno else name


def _classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.OK
    if 400 <= status < 500:
        return Outcome.CLIENT_ERROR
    if 500 <= status < 600:
        return Outcome.SERVER_ERROR
    return Outcome.OTHER


class _Broken(Exception):
    """The connection ended (EOF) while a response was expected."""


class Connection:
    """One client connection, reopened when needed; not thread-safe (one per client thread)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 2.0,
        timeout: float = 30.0,
        keep_alive: bool = True,
        host_header: str | None = None,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.tls, self.server_name = tls, server_name or host
        self.connect_timeout, self.timeout = connect_timeout, timeout
        self.keep_alive = keep_alive
        self.host_header = host_header or f"{host}:{port}"
        self.sock: socket.socket | None = None
        self.opened = 0  # connections opened
        self.stale = 0  # idle connections found closed by the server before reuse

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _reusable(self) -> bool:
        if self.sock is None:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        if readable:  # EOF (or stray bytes) on an idle connection: the server is done with it
            self.stale += 1
            return False
        return True

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Result:
        started, t0 = time.time(), time.perf_counter()

        def done(outcome: Outcome, **kw: Any) -> Result:
            return Result(
                outcome, started=started, ended=time.time(), latency=time.perf_counter() - t0, **kw
            )

        fresh = False
        if not self._reusable():
            self.close()
            try:
                self.sock = socket.create_connection(
                    (self.host, self.port), timeout=self.connect_timeout
                )
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.tls is not None:  # a failed handshake: the request was never sent
                    self.sock = self.tls.wrap_socket(self.sock, server_hostname=self.server_name)
            except OSError as exc:  # includes gaierror, connect timeouts, TLS handshake errors
                self.close()
                return done(Outcome.NOT_SENT, error=_describe(exc), fresh=True)
            self.opened += 1
            fresh = True
        sock = self.sock
        assert sock is not None
        sock.settimeout(self.timeout)

        payload = b"" if body is None else json.dumps(body).encode()
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host_header}",
            "User-Agent: heroes-drills",
            "Accept: application/json",
        ]
        if not self.keep_alive:
            lines.append("Connection: close")
        if body is not None or method in {"POST", "PUT", "PATCH"}:
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            return done(Outcome.SEND_FAILED, error=_describe(exc), fresh=fresh)
        sent = time.time()

        buf = bytearray()
        try:
            status, resp_headers, resp_body = self._read_response(sock, buf)
        except TimeoutError as exc:
            self.close()
            return done(Outcome.TIMEOUT, sent=sent, error=_describe(exc), fresh=fresh)
        except (OSError, _Broken, ValueError) as exc:
            self.close()
            outcome = Outcome.PARTIAL if buf else Outcome.DROPPED
            return done(outcome, sent=sent, error=_describe(exc), fresh=fresh)
        if not self.keep_alive or resp_headers.get("connection", "").lower() == "close":
            self.close()
        return done(
            _classify(status),
            status=status,
            sent=sent,
            fresh=fresh,
            headers=resp_headers,
            body=resp_body,
        )

    @staticmethod
    def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
        def more() -> None:
            chunk = sock.recv(65536)
            if not chunk:
                raise _Broken("EOF")
            buf.extend(chunk)

        while b"\r\n\r\n" not in buf:
            more()
        end = buf.index(b"\r\n\r\n")
        head = bytes(buf[:end]).decode("latin-1").split("\r\n")
        version, _, rest = head[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {head[0]!r}")
        status = int(rest.split(" ", 1)[0])
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while b"\r\n0\r\n\r\n" not in buf[start - 2 :]:
                more()
            return status, headers, _dechunk(bytes(buf[start:]))
        length = int(headers.get("content-length", "0"))
        while len(buf) - start < length:
            more()
        return status, headers, bytes(buf[start : start + length])


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2 :]


def request_once(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    ca_file: str | None = None,
) -> Result:
    """One request on its own connection (``Connection: close``)."""
    host, port = split_url(url)
    conn = Connection(
        host, port, timeout=timeout, connect_timeout=min(timeout, 3.0), keep_alive=False,
        tls=tls_context(url, ca_file),
    )  # fmt: skip
    try:
        return conn.request(method, path, body, headers)
    finally:
        conn.close()
