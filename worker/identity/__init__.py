"""Anonymous visitors and identity merge (docs/state.md, "Anonymous visitors and identity merge").

An ``identify`` click (login, checkout) carries both an ``anonymous_id`` and a ``customer_id``
and links the visitor to the customer; what the visitor did before (and does after) is merged
into the customer exactly once, whatever the order the link and the clicks arrive in. Anonymous
state lives in the visitor's space, the customer in the customer's: on a Redis Cluster those are
different slots, so the work is two atomic scripts joined by an outbox of transfers:

* :mod:`.records` picks a batch's anonymous and identify clicks and packs ``anon.lua``'s
  arguments, one call per visitor space;
* ``anon.lua`` keeps unlinked visitors' state and the links, and turns what belongs to a
  customer into a *transfer* written to the space's outbox in the same call;
* ``merge.lua`` applies transfers to customers, idempotently (:mod:`.transfers` reads them);
* :mod:`.stage` runs both after a batch's state apply, before its offsets are committed, and
  drains the outbox (:mod:`.drain` at start and periodically); :mod:`.store` plugs the stage
  into ingestion as a state store;
* :mod:`.forget` removes a forgotten customer's links; :mod:`.model` is the pure oracle.
"""
