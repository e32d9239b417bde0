"""Control-topic messages: small JSON objects with a ``type``.

- ``{"type": "model_update", "version": V}``: a new model is current; workers reload now
  (they also poll ``{prefix}:model:current``, so a lost message only delays the reload);
- ``{"type": "rescore_all", "token": T}``: re-score every customer against the current model;
  the request is also stored in Redis (``{prefix}:rescore:request``) and claimed once per token;
- ``{"type": "drift", "version": V, "max": .., "mean": .., "bound": .., "at": ISO}``: the online
  centroids moved more than the bound (a notice for people and tools; workers ignore it).
"""

from __future__ import annotations

from typing import Any

import orjson

from worker.scoring.errors import ControlMessageInvalid

TYPES = frozenset({"model_update", "rescore_all", "drift"})


def encode(kind: str, **fields: Any) -> bytes:
    if kind not in TYPES:
        raise ControlMessageInvalid(f"unknown control message type {kind!r}")
    return orjson.dumps({"type": kind, **fields})


#: Control messages are a few hundred bytes; anything much larger is not one.
MAX_CONTROL_BYTES = 64 * 1024


def decode(raw: bytes | None) -> dict[str, Any]:
    """The message in ``raw``, or :class:`ControlMessageInvalid` (and nothing else) saying why."""
    if raw is None:
        raise ControlMessageInvalid("empty record: the value is null")
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ControlMessageInvalid(f"not bytes: {type(raw).__name__}")
    if len(raw) > MAX_CONTROL_BYTES:
        raise ControlMessageInvalid(f"oversize: {len(raw)} bytes, the limit is {MAX_CONTROL_BYTES}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ControlMessageInvalid(f"control message is not JSON: {bytes(raw[:80])!r}") from exc
    kind = data.get("type") if isinstance(data, dict) else None
    if not isinstance(kind, str) or kind not in TYPES:
        raise ControlMessageInvalid(f"not a control message: {bytes(raw[:80])!r}")
    message: dict[str, Any] = data
    return message
