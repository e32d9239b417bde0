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


def decode(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ControlMessageInvalid(f"control message is not JSON: {raw[:80]!r}") from exc
    if not isinstance(data, dict) or data.get("type") not in TYPES:
        raise ControlMessageInvalid(f"not a control message: {raw[:80]!r}")
    return data
