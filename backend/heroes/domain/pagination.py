"""Cursor pages for GET /heroes/: the opaque cursor and the ``Link: <...>; rel="next"`` header.

A cursor names the last id of the page it follows (keyset pagination on the primary key: the
next page is ``id > last``, found through the index however deep it is, where OFFSET walks and
discards every row before it). It is base64url of a version byte, the id and a checksum, so a
garbled or hand-made cursor is refused with a 400 instead of silently reading from elsewhere.
The checksum is not a secret: a cursor grants nothing a client could not ask for with offset.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Mapping
from urllib.parse import quote, urlencode

from heroes.domain.models import INT32_MAX
from heroes.errors import CursorInvalid

VERSION = 1
_PAYLOAD = struct.Struct(">BQ")  # version, last id of the page
_CHECK_BYTES = 6
_CHECK_KEY = b"heroes.cursor"
#: A cursor is base64url of 15 bytes: 20 characters, no padding; anything else is refused unread.
CURSOR_PATTERN = re.compile(r"[A-Za-z0-9_-]{20}")


def _check(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=_CHECK_BYTES, key=_CHECK_KEY).digest()


def encode_cursor(last_id: int) -> str:
    payload = _PAYLOAD.pack(VERSION, last_id)
    return base64.urlsafe_b64encode(payload + _check(payload)).decode("ascii")


def decode_cursor(cursor: str) -> int:
    """The last id of the previous page; CursorInvalid for anything this service did not issue."""
    if CURSOR_PATTERN.fullmatch(cursor) is None:
        raise CursorInvalid("Invalid cursor: use the one from the previous page's Link header")
    raw = base64.urlsafe_b64decode(cursor)
    payload, check = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
    if check != _check(payload):
        raise CursorInvalid("Invalid cursor: checksum mismatch")
    version, last_id = _PAYLOAD.unpack(payload)
    if version != VERSION or last_id > INT32_MAX:
        raise CursorInvalid("Invalid cursor: unknown version")
    return int(last_id)


def next_link(path: str, query: Mapping[str, object], last_id: int) -> str:
    """The Link header value pointing at the page after ``last_id``, with the same ``query``
    (filters and limit; None values left out)."""
    params = {name: value for name, value in query.items() if value is not None}
    params["cursor"] = encode_cursor(last_id)
    return f'<{path}?{urlencode(params, quote_via=quote)}>; rel="next"'
