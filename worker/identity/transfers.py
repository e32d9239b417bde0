"""A transfer as the outbox holds it: what ``anon.lua`` wrote, for ``merge.lua`` to apply.

Python reads only the header (the customer and the anonymous id: where to merge, and whom to
unlink when the customer was forgotten); the body is the scripts' business (layout in
``anon.lua``). The id is the first 16 hex digits of the SHA-1 of the value: a transfer is named
by its content, so the same behaviour sent twice has one id, and merging it twice is once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

_HEADER = struct.Struct(">HH")


@dataclass(frozen=True)
class Transfer:
    """One outbox entry of the visitor space ``space``."""

    space: str
    id: str
    customer_id: str
    anonymous_id: str
    value: bytes = field(repr=False)

    @classmethod
    def parse(cls, space: str, transfer_id: bytes | str, value: bytes) -> Transfer:
        """An outbox entry; raises ``ValueError`` if its header is not one ``anon.lua`` writes."""
        if len(value) < _HEADER.size:
            raise ValueError("a transfer shorter than its header")
        lc, la = _HEADER.unpack_from(value)
        if len(value) < _HEADER.size + lc + la:
            raise ValueError("a transfer shorter than its ids")
        cid = value[_HEADER.size : _HEADER.size + lc].decode()
        anon = value[_HEADER.size + lc : _HEADER.size + lc + la].decode()
        tid = transfer_id.decode() if isinstance(transfer_id, bytes) else transfer_id
        return cls(space, tid, cid, anon, value)
