"""Customer hash fields -> model features in real units, vectorised (pure numpy).

The matrix equals, bit for bit, what :func:`analytics.frames.feature_frame` gives for
the export rows of the same customers (``worker.core.rfm.features(state, as_of)``): the same
float operations in the same order (a unit test compares the two on random states). It is
computed here straight from the stored integers because building export dicts and a DataFrame
per batch costs more than the rest of scoring together.

No Kafka, no Redis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from worker.core.rfm import HASH_FIELDS, MS_PER_DAY
from worker.segmentation.features import KNOWN_FEATURES, RECENCY_CAP_DAYS

#: State fields read per customer, in this order (short names of ``HASH_FIELDS``).
STATE_FIELDS: tuple[str, ...] = tuple(HASH_FIELDS.values())
#: Segment fields read after the state fields.
SEGMENT_FIELDS: tuple[str, ...] = ("segment", "model_version", "segment_seq")
READ_FIELDS: tuple[str, ...] = (*STATE_FIELDS, *SEGMENT_FIELDS)
COLUMN = {name: i for i, name in enumerate(STATE_FIELDS)}
#: Time fields may be absent (no order yet); an absent counter is 0, as in ``CustomerState``.
_TIME_FIELDS = frozenset({"t0", "t1", "ts"})
_MISSING = -(2**62)
ABSENT_VALUES = [_MISSING if name in _TIME_FIELDS else 0 for name in STATE_FIELDS]


@dataclass(frozen=True)
class Round:
    """A round of customers as read from Redis (customers without a hash are left out)."""

    customer_ids: list[str]
    #: ``(n, len(STATE_FIELDS))`` int64; an absent counter is 0, an absent time ``_MISSING``.
    raw: np.ndarray
    segments: list[str | None]
    model_versions: list[str | None]
    seqs: list[int | None]
    #: Customers that have no hash (forgotten, or never existed): only removed from unscored.
    missing: list[str]
    #: Per customer, its ``{prefix}:unscored`` stamp when its state was read (0 = none).
    stamps: list[int] = dataclasses.field(default_factory=list)
    #: True when the rows come from the state script's snapshot (worker/scoring/snapshot.py),
    #: whose stamp also vouches for ``segment_seq``; False when read back from Redis.
    snapshot: bool = False
    #: Why each customer changed, where the state script said (snapshot rows).
    reasons: list[str | None] | None = None
    #: The unscored stamps of ``missing``, read with them (their entries are removed with it).
    missing_stamps: list[int] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.customer_ids)

    def column(self, field: str) -> np.ndarray:
        return self.raw[:, COLUMN[field]]

    @property
    def last_seen_ms(self) -> np.ndarray:
        return self.column("ts")

    @property
    def last_order_ms(self) -> np.ndarray:
        return self.column("t1")


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


def parse(customer_ids: Sequence[str], replies: Sequence[Sequence[bytes | None]]) -> Round:
    """One HMGET reply of :data:`READ_FIELDS` per customer -> a :class:`Round`.

    Without unscored stamps: such a round is for reading (explain, tests), never written.
    """
    n_state = len(STATE_FIELDS)
    ids: list[str] = []
    rows: list[list[int]] = []
    segs: list[str | None] = []
    versions: list[str | None] = []
    seqs: list[int | None] = []
    missing: list[str] = []
    for cid, reply in zip(customer_ids, replies, strict=True):
        state = reply[:n_state]
        if all(v is None for v in state):
            missing.append(cid)
            continue
        ids.append(cid)
        rows.append([a if v is None else int(v) for v, a in zip(state, ABSENT_VALUES, strict=True)])
        seg, version, seq = reply[n_state:]
        segs.append(_text(seg))
        versions.append(_text(version))
        seqs.append(None if seq is None else int(seq))
    raw = np.array(rows, dtype=np.int64).reshape(len(rows), n_state)
    return Round(ids, raw, segs, versions, seqs, missing)


#: State fields each feature is computed from (``f`` also decides who is a buyer).
_SOURCES: dict[str, tuple[str, ...]] = {
    "frequency": ("f",),
    "monetary": ("m",),
    "aov": ("f", "m"),
    "recency_days": ("t1", "f"),
    "tenure_days": ("t0", "f"),
    "items": ("i",),
    "sessions": ("s",),
    "page_views": ("pv",),
    "product_views": ("iv",),
    "add_to_carts": ("ac",),
    "checkout_starts": ("co",),
    "abandoned_carts": ("cs", "cc"),
    "views_per_order": ("pv", "iv", "f"),
}
#: Read for every round whatever the model: ``t1``/``ts`` give the change event's reason and
#: time, and ``ts`` is set on every customer with an applied event (an all-absent row = no hash).
_ALWAYS = ("t1", "ts")


def fields_for(feature_names: Sequence[str]) -> tuple[str, ...]:
    """The state fields a round must read for these features, in :data:`STATE_FIELDS` order.

    Scoring reads only these: a model on RFM + sessions needs 5 of the 13 fields, and each
    field read costs Redis (``HMGET`` walks the hash) and this process (parsing) per customer.
    An unknown feature name reads everything.
    """
    if any(name not in _SOURCES for name in feature_names):
        return STATE_FIELDS
    wanted = set(_ALWAYS).union(*(_SOURCES[name] for name in feature_names))
    return tuple(f for f in STATE_FIELDS if f in wanted)


def widen(got: np.ndarray, fields: Sequence[str], absent: int) -> np.ndarray:
    """``got`` (one column per ``fields``, ``absent`` where absent) in :class:`Round`'s layout.

    Fields not in ``fields``, and ``absent`` values, get :data:`ABSENT_VALUES`.
    """
    absent_row = np.array(ABSENT_VALUES, dtype=np.int64)
    raw = np.repeat(absent_row[None, :], len(got), axis=0)
    columns = [COLUMN[f] for f in fields]
    raw[:, columns] = np.where(got == absent, absent_row[columns][None, :], got)
    return raw


def _ints(values: Sequence[bytes | str], absent: int) -> list[int]:
    """Integers of a reply column; a value that is not one counts as ``absent``."""
    try:
        return list(map(int, values))  # C speed: the common case
    except ValueError:
        out = []
        for v in values:
            try:
                out.append(int(v))
            except ValueError:
                out.append(absent)
        return out


def _texts(values: Sequence[bytes | str | None]) -> list[str | None]:
    """Text of a reply column, ``None`` where absent or empty (one decode per distinct value)."""
    text = {v: _text(v) or None for v in set(values)}
    return [text[v] for v in values]


def from_flat(
    customer_ids: Sequence[str],
    reply: Sequence[bytes | str],
    absent: int,
    fields: Sequence[str] = STATE_FIELDS,
) -> Round:
    """The read script's flat reply (see ``worker.scoring.store.READ_LUA``) -> a :class:`Round`.

    Per customer: ``fields`` (``absent`` where absent), segment, model version, segment_seq
    ('' where absent); then every customer's unscored stamp (0 = none). State fields not read
    are absent. Flat strings, not rows: building a table per customer and converting numbers
    cost the script more than its ``HMGET``.
    """
    n, n_read = len(customer_ids), len(fields)
    width = n_read + 3
    if len(reply) != n * (width + 1):
        raise ValueError(f"read reply of {len(reply)} values for {n} customers")
    if not n:
        return parse([], [])
    columns = [_ints(reply[j : n * width : width], absent) for j in range(n_read)]
    got = np.array(columns, dtype=np.int64).reshape(n_read, n).T
    found = (got != absent).any(axis=1)
    keep, gone = np.flatnonzero(found).tolist(), np.flatnonzero(~found).tolist()
    segments = _texts(reply[n_read : n * width : width])
    versions = _texts(reply[n_read + 1 : n * width : width])
    seqs = _ints([v or b"-1" for v in reply[n_read + 2 : n * width : width]], -1)
    stamps = _ints(reply[n * width :], 0)
    return Round(
        [customer_ids[i] for i in keep],
        widen(got[keep], fields, absent),
        [segments[i] for i in keep],
        [versions[i] for i in keep],
        [None if seqs[i] < 0 else seqs[i] for i in keep],
        [customer_ids[i] for i in gone],
        [stamps[i] for i in keep],
        missing_stamps=[stamps[i] for i in gone],
    )


def feature_matrix(rnd: Round, as_of_ms: int, names: Sequence[str] = KNOWN_FEATURES) -> np.ndarray:
    """``(n, len(names))`` float64 features in real units as of ``as_of_ms`` (see module doc)."""
    c = rnd.column
    f = c("f").astype(np.float64)
    freq = np.maximum(f, 0.0)
    buyer = f > 0
    out: dict[str, np.ndarray] = {"frequency": freq}
    monetary = c("m").astype(np.float64) / 100.0
    out["monetary"] = monetary
    with np.errstate(divide="ignore", invalid="ignore"):
        out["aov"] = np.where(buyer, monetary / np.where(buyer, f, 1.0), 0.0)
    for name, field, fill in (
        ("recency_days", "t1", RECENCY_CAP_DAYS),
        ("tenure_days", "t0", 0.0),
    ):
        t = c(field)
        known = t != _MISSING
        diff = np.maximum(0, as_of_ms - np.where(known, t, as_of_ms)).astype(np.float64)
        days = np.clip(diff / float(MS_PER_DAY), 0.0, RECENCY_CAP_DAYS)
        out[name] = np.where(known & buyer, days, fill)
    for name, field in (
        ("items", "i"),
        ("sessions", "s"),
        ("page_views", "pv"),
        ("product_views", "iv"),
        ("add_to_carts", "ac"),
        ("checkout_starts", "co"),
    ):
        out[name] = np.maximum(c(field), 0).astype(np.float64)
    out["abandoned_carts"] = np.maximum(c("cs") - c("cc"), 0).astype(np.float64)
    views = (c("pv") + c("iv")).astype(np.float64)
    out["views_per_order"] = np.maximum(views / np.maximum(f, 1.0), 0.0)
    if len(rnd) == 0:
        return np.empty((0, len(names)), dtype=np.float64)
    return np.column_stack([out[n] for n in names]).astype(np.float64)
