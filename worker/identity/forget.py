"""Forgetting a customer removes the links that point to them (docs/forget.md).

``merge.lua`` records every anonymous id merged into a customer in the customer's space
(``{space}:al:{<id>}``); forget reads that set, removes each link in its visitor's space
(``unlink.lua``: compare-and-delete, one call per visitor, idempotent), and only then runs
the forget script, which deletes the set with the customer's other keys. A retry after any
failure finds the set still there and does it again. A link made in the meantime (a transfer
not merged yet) is caught by ``merge.lua``: the forgotten customer's suppression entry drops the
transfer and the stage removes its link.
"""

from __future__ import annotations

from worker.identity.stage import IdentityStage


async def unlink_customer(stage: IdentityStage, customer_id: str) -> int:
    """Remove every visitor's link to ``customer_id``; the number of links removed."""
    removed = 0
    for anonymous_id in await stage.linked(customer_id):
        removed += await stage.unlink(anonymous_id, customer_id)
    return removed
