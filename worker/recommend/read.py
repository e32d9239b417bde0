"""One customer's recommendations in one round trip (``segstream recommend ID``).

The read is one script call, read.lua, on the node that holds the customer: its key is the
customer's state hash ``{space}:c:{<id>}``, and the lists it ranks (``{space}:rtop:<segment>``,
``{space}:rtop``) share that key's hash tag. The storefront sends the same call with
``EVALSHA_RO`` (its ACL allows no write, and the script writes nothing); segstream's own user
sends ``EVALSHA``. A Redis that does not hold the script yet answers NOSCRIPT, and the call is
sent again with the script's text (``EVAL_RO`` / ``EVAL``), which also loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.exceptions as rex

from worker.recommend.rank import BOOST, Pick
from worker.redis_io import Script
from worker.state.keys import Keyspace

__all__ = ["READ", "Recommendations", "read_call", "recommend"]

READ = Script.packaged("worker.recommend", "read.lua")


@dataclass(frozen=True)
class Recommendations:
    customer_id: str
    segment: str | None
    favourite: str | None
    picks: list[Pick]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per pick: rank, sku, category, score, reason."""
        return [
            {
                "rank": i,
                "sku": p.sku,
                "category": p.category,
                "score": p.score,
                "reason": p.reason(self.segment),
            }
            for i, p in enumerate(self.picks, start=1)
        ]


def read_call(keyspace: Keyspace, customer_id: str, n: int, boost: float = BOOST) -> list[Any]:
    """The arguments after ``EVALSHA_RO <sha>``: ``1 <key> <space> <n> <boost>``."""
    return [1, keyspace.customer(customer_id), keyspace.space_of(customer_id), n, repr(boost)]


def recommend(
    client: Any,
    keyspace: Keyspace,
    customer_id: str,
    n: int = 10,
    boost: float = BOOST,
    read_only: bool = False,
) -> Recommendations:
    """The customer's top ``n``: one ``execute_command`` on ``client`` (a redis-py client, single
    or cluster), a second only if Redis does not hold the script yet."""
    args = read_call(keyspace, customer_id, n, boost)
    by_sha, by_text = ("EVALSHA_RO", "EVAL_RO") if read_only else ("EVALSHA", "EVAL")
    try:
        reply = client.execute_command(by_sha, READ.sha, *args)
    except rex.NoScriptError:
        reply = client.execute_command(by_text, READ.text, *args)
    return parse(customer_id, reply)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def parse(customer_id: str, reply: Any) -> Recommendations:
    """read.lua's reply -> :class:`Recommendations`."""
    segment, favourite = _text(reply[0]), _text(reply[1])
    picks = []
    for sku, category, score, source in reply[2] if len(reply) > 2 else []:
        where = _text(source) or ""
        picks.append(
            Pick(
                _text(sku) or "",
                _text(category) or None,
                float(score),
                where.split("+")[0],
                where.endswith("+favourite"),
            )
        )
    return Recommendations(customer_id, segment, favourite, picks)
