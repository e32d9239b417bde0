"""The Redis keys of identity merge (listed in docs/state.md).

A visitor's keys live in the visitor's space (``Keyspace.space_of(anonymous_id)``), a
customer's in the customer's; the builders take the space. The names use ``prefix`` like every
key builder, so the forget key scan (tests/unit/test_forget_keys.py) sees them: ``a`` and ``l``
are tagged by an anonymous id (worker/erase/keys.py ``TAGGED_NOT_BY_CUSTOMER``), ``al`` by a
customer id (deleted by forget with the customer's other keys).
"""

from __future__ import annotations


def anonymous(prefix: str, anonymous_id: str) -> str:
    """Hash: an unlinked visitor's counters and typed fingerprints (expires, see the docs)."""
    return f"{prefix}:a:{{{anonymous_id}}}"


def link(prefix: str, anonymous_id: str) -> str:
    """String: the customer id the visitor is linked to (expires, refreshed on use)."""
    return f"{prefix}:l:{{{anonymous_id}}}"


def linked(prefix: str, customer_id: str) -> str:
    """Set: the anonymous ids merged into the customer (forget removes their links)."""
    return f"{prefix}:al:{{{customer_id}}}"


def fence(prefix: str, topic: str) -> str:
    """Hash partition -> last offset ``anon.lua`` processed in this space."""
    return f"{prefix}:afence:{topic}"


def outbox(prefix: str) -> str:
    """Hash transfer id -> transfer not yet merged into its customer."""
    return f"{prefix}:xfer"


#: Counters identity keeps in each space's ``{space}:counters`` (summed over spaces by readers).
COUNTER_NAMES: tuple[str, ...] = (
    "anonymous_kept",  # anonymous clicks added to an unlinked visitor's state
    "anonymous_forwarded",  # anonymous clicks of a linked visitor, sent to the customer
    "anonymous_duplicates",  # anonymous clicks the visitor's state already held
    "anonymous_dropped",  # anonymous clicks over the per-visitor bound, not kept
    "identity_fenced",  # anonymous and identify clicks at or below the identity fence
    "identity_links",  # visitors linked to a customer
    "identify_conflicts",  # identify clicks naming another customer than the link's: ignored
    "identity_transfers",  # transfers written to an outbox
    "identity_merges",  # transfers merged into a customer
    "identity_merge_duplicates",  # transfers found already merged
    "identity_suppressed",  # transfers of a forgotten customer, dropped (and unlinked)
)
