"""Every Redis key segstream keeps per customer, for ``segstream forget`` (docs/forget.md).

A per-customer key is ``{prefix}:<family>:{<customer id>}`` (the id as a Redis Cluster hash
tag, :mod:`worker.state.keys`). :data:`CUSTOMER_KEY_FAMILIES` lists the families: the forget
script deletes ``{prefix}:<family>:{<id>}`` for each. **A feature that adds a per-customer key
adds its family here**; ``tests/unit/test_forget_keys.py`` scans the worker's sources for key
builders of that shape and fails on a family missing from this list.

The customer also appears in shared keys (not per customer): the ``{prefix}:unscored`` hash,
the sweep-index bucket of their last order (``{prefix}:lo:<hour>``) and the scoring outbox
(``{prefix}:outbox``); the forget script removes them from each.

Suppression (what keeps a replay of the customer's old events from bringing them back):
``{prefix}:x:{<id>}`` holds the erasure time (epoch ms) and expires after the suppression
bound; ``{prefix}:x:until`` expires no earlier than any of them, so while no erasure is live
the state script looks up nothing per customer.
"""

from __future__ import annotations

#: Families of per-customer keys ``{prefix}:<family>:{<customer id>}`` that forget deletes:
#: ``c`` the state hash (state, segment fields), ``f`` the packed event fingerprints, ``al``
#: the anonymous ids merged into the customer (worker/identity: their links are removed first),
#: ``cp`` the customer's campaign assignments (worker/campaigns).
CUSTOMER_KEY_FAMILIES: tuple[str, ...] = ("c", "f", "al", "cp")

#: Families whose keys carry a hash tag that is *not* a customer id (the tests' key scan skips
#: them): family -> what the tag is.
TAGGED_NOT_BY_CUSTOMER: dict[str, str] = {
    "preflight": "worker/preflight.py's scratch keys, tagged with a random token",
    "a": "worker/identity: an anonymous visitor's state, tagged with the anonymous id",
    "l": "worker/identity: a visitor's link to a customer, tagged with the anonymous id "
    "(forget removes the links of the customer's al set)",
}

#: The family of the suppression entries (kept by forget, not deleted: they are what remembers
#: the erasure, for a bounded time).
SUPPRESSION_FAMILY = "x"

DAY_MS = 86_400_000


def suppression(prefix: str, customer_id: str) -> str:
    """String: the erasure time (epoch ms) of a forgotten customer, expiring after the bound."""
    return f"{prefix}:{SUPPRESSION_FAMILY}:{{{customer_id}}}"


def suppression_until(prefix: str) -> str:
    """String that expires no earlier than any suppression entry (its value means nothing)."""
    return f"{prefix}:{SUPPRESSION_FAMILY}:until"


def customer_keys(prefix: str, customer_id: str) -> list[str]:
    """Every per-customer key forget deletes."""
    return [f"{prefix}:{family}:{{{customer_id}}}" for family in CUSTOMER_KEY_FAMILIES]


def suppression_ms(days: float) -> int:
    """How long a suppression entry lives, in ms (at least one ms: Redis refuses PX 0)."""
    return max(1, round(days * DAY_MS))
