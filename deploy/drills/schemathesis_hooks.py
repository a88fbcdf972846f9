"""schemathesis hooks for drill 5 (SCHEMATHESIS_HOOKS=drills.schemathesis_hooks).

Two request parts a schema cannot fully describe, made what a real client sends when the case is
meant to be valid (positive generation); negative cases go out as generated:
- ``Idempotency-Key``: a client never reuses a key for a different request (the API answers 422
  then, as the IETF draft says), and the fuzzer draws few distinct keys; it also reads the
  schema's ECMA-262 pattern with Python's ``$``, which admits a trailing newline. A valid case
  gets a fresh UUID, as a client sends.
- ``cursor``: opaque and checksummed (a forged one is a 400); a valid case carries a real one,
  as a client copies it from a Link header, and never together with an offset.
"""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis
from schemathesis.generation.modes import GenerationMode

from heroes.domain.pagination import encode_cursor


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    if case.meta is None or case.meta.generation.mode is not GenerationMode.POSITIVE:
        return
    headers = case.headers or {}
    if "Idempotency-Key" in headers:
        headers["Idempotency-Key"] = str(uuid.uuid4())
    query = case.query or {}
    if "cursor" in query:
        query["cursor"] = encode_cursor(1 + uuid.uuid4().int % 1000)
        query.pop("offset", None)
