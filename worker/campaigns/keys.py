"""The Redis keys of campaigns (docs/campaigns.md, docs/state.md).

- ``{prefix}:campaigns``: hash campaign name -> the campaign's JSON (:class:`Campaign`), shared
  by every process (one key; on a cluster redis-py routes it by its slot like the model keys).
- ``{space}:cp:{<customer id>}``: hash campaign name -> ``arm|assigned_ms|published`` of one
  customer, in the customer's space (``worker.state.keys.Keyspace``: on a single Redis the
  prefix, ``ss:cp:{C42}``), so it shares the slot of the customer's suppression entry. Family
  ``cp`` is in ``worker.erase.keys.CUSTOMER_KEY_FAMILIES``: ``segstream forget`` deletes it.
"""

from __future__ import annotations

from worker.state.keys import Keyspace, _escape

#: The per-customer key family of assignments.
FAMILY = "cp"


def registry(prefix: str) -> str:
    """Hash campaign name -> campaign JSON."""
    return f"{prefix}:campaigns"


def assignments(prefix: str, customer_id: str) -> str:
    """Hash campaign name -> ``arm|assigned_ms|published`` of one customer (``prefix``: the
    customer's space)."""
    return f"{prefix}:cp:{{{customer_id}}}"


def suppression(prefix: str, customer_id: str) -> str:
    """The customer's erasure entry (written by ``segstream forget``, worker/erase/keys.py)."""
    from worker.erase.keys import suppression as erased

    return erased(prefix, customer_id)


def assignments_pattern(keyspace: Keyspace) -> str:
    """SCAN MATCH pattern of every customer's assignments hash."""
    if not keyspace.cluster:
        return f"{_escape(keyspace.prefix)}:{FAMILY}:{{*}}"
    return _escape(keyspace.prefix) + ":{*}:" + FAMILY + ":{*}"


def customer_of(key: bytes | str) -> str:
    """The customer id of an assignments key (the last ``{...}`` of the key)."""
    text = key.decode() if isinstance(key, bytes) else key
    head = text.rfind(f":{FAMILY}:{{")
    if head < 0 or not text.endswith("}"):
        raise ValueError(f"{text!r} is not a campaign assignments key")
    return text[head + len(FAMILY) + 3 : -1]
