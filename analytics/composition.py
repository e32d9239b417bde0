"""Who is in each segment: its demographic and category composition, in numbers and in words.

Pure pandas over export-contract rows (the categorical columns of
:data:`worker.core.attributes.ATTRIBUTE_COLUMNS`, ``None`` when unknown) and a segment label
per row. Used by the report (a section, a CSV and stacked-bar plots) and by training (each
profile's ``composition`` sentence, printed by ``segstream segments``).

Shares. For every segment and attribute, each level's ``share`` is of all the segment's
customers (so the levels, ``(other)`` and ``(unknown)`` add up to 1), and ``share_of_known`` is
of the customers whose value is known: the words use the latter, since who fills in a profile
is not who buys. ``lift`` compares a segment with the whole shop (every customer in the frame,
segmented or not): share of known in the segment / share of known in the shop, so 2.0 means the
level is twice as common in the segment; a lift far from 1 is what makes a segment distinctive.

Words. A segment is described only by attributes with at least :data:`MIN_KNOWN` known values
that are also at least :data:`MIN_KNOWN_SHARE` of the segment: fewer say more about noise than
about the segment. The sentence gives the most common level of each headline attribute
(:data:`HEADLINE`: country, favourite category, age band, device), with its lift when that is at
least :data:`NOTE_LIFT` (or at most its inverse), then at most :data:`MAX_EXTRAS` phrases for
what sets the segment apart most: a rarer level (at least :data:`DISTINCT_SHARE` of the known
values) or another attribute's most common level, with a lift of at least :data:`DISTINCT_LIFT`.
E.g. ``66 % DE (1.9x the shop), top category electronics (57 %, 5.0x the shop), mostly 35-44
(91 %, 3.2x the shop), 65 % desktop (1.5x the shop), 79 % gold tier (3.8x the shop)``. A segment
with no known value at all is ``no demographics known``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "ALL",
    "COLUMNS",
    "COMPOSITION_ATTRIBUTES",
    "HEADLINE",
    "NO_DEMOGRAPHICS",
    "OTHER",
    "UNKNOWN",
    "Composition",
    "describe_labels",
    "level_values",
]

#: The categorical attributes described (``birth_year``/``age`` are numbers: ``age_band`` says it).
COMPOSITION_ATTRIBUTES: tuple[str, ...] = (
    "country",
    "region",
    "age_band",
    "gender",
    "signup_channel",
    "loyalty_tier",
    "marketing_consent",
    "favourite_category",
    "top_viewed_category",
    "device",
)
#: Attributes always in the words when known well enough, in this order.
HEADLINE: tuple[str, ...] = ("country", "favourite_category", "age_band", "device")
#: Known values an attribute needs in a segment before the words use it ...
MIN_KNOWN = 20
#: ... and the share of the segment they must be.
MIN_KNOWN_SHARE = 0.10
#: Levels listed per segment and attribute in :meth:`Composition.table` (the rest: ``(other)``).
TOP_LEVELS = 3
#: A named level's lift is said from here (or from its inverse, downwards).
NOTE_LIFT = 1.25
#: A level that is not the most common is named for its lift from here ...
DISTINCT_LIFT = 1.5
#: ... when it holds at least this share of the known values.
DISTINCT_SHARE = 0.15
#: At most this many phrases beyond the headline attributes' most common levels.
MAX_EXTRAS = 2

#: Segment label of the whole shop's rows; level labels of the rest and of the unknown.
ALL = "(all customers)"
OTHER = "(other)"
UNKNOWN = "(unknown)"
NO_DEMOGRAPHICS = "no demographics known"
#: The columns of :meth:`Composition.table` (``composition.csv``).
COLUMNS: tuple[str, ...] = (
    "segment", "attribute", "level", "customers", "share", "share_of_known", "lift",
)  # fmt: skip

#: attribute -> (words for the most common level, words for another, distinctive level).
_PHRASES: dict[str, tuple[str, str]] = {
    "country": ("{pct} {level}", "{level} {pct}"),
    "region": ("{pct} in {level}", "{level} {pct}"),
    "age_band": ("{often} {level} ({pct})", "aged {level} {pct}"),
    "gender": ("{pct} {level}", "{level} {pct}"),
    "signup_channel": ("{pct} signed up via {level}", "via {level} {pct}"),
    "loyalty_tier": ("{pct} {level} tier", "{level} tier {pct}"),
    "marketing_consent": ("{pct} {level}", "{level} {pct}"),
    "favourite_category": ("top category {level} ({pct})", "{level} {pct}"),
    "top_viewed_category": ("most viewed {level} ({pct})", "most viewed {level} {pct}"),
    "device": ("{pct} {level}", "{level} {pct}"),
}
_CONSENT = {"yes": "consent to marketing", "no": "no marketing consent"}
_TRUE = {"true", "1", "1.0", "yes", "y", "t"}
_FALSE = {"false", "0", "0.0", "no", "n", "f"}


def level_values(values: pd.Series, attribute: str) -> pd.Series:
    """The attribute's levels as text, ``<NA>`` where unknown (None, NaN, empty).

    ``marketing_consent`` (a bool, or its text in a CSV export) becomes ``yes``/``no``.
    """
    text = values.astype("string").str.strip()
    text = text.mask(text == "", pd.NA)
    if attribute == "marketing_consent":
        lowered = text.str.lower()
        text = pd.Series(pd.NA, index=values.index, dtype="string")
        text[lowered.isin(_TRUE).fillna(False).to_numpy(dtype=bool)] = "yes"
        text[lowered.isin(_FALSE).fillna(False).to_numpy(dtype=bool)] = "no"
    return text


def _pct(share: float) -> str:
    return f"{share * 100:.0f} %"


class Composition:
    """Level counts of every attribute, for the whole shop and each segment (module docstring).

    Build with :meth:`of`; segments are ordered by size (largest first), then name.
    """

    def __init__(
        self, counts: dict[tuple[str, str], pd.Series], sizes: pd.Series, attributes: Sequence[str]
    ) -> None:
        #: (segment or ALL, attribute) -> level -> customers, most common first (known only).
        self.counts = counts
        #: ALL, then each segment -> its customers.
        self.sizes = sizes
        self.attributes = tuple(attributes)

    @classmethod
    def of(
        cls,
        frame: pd.DataFrame,
        segment_column: str = "segment",
        attributes: Sequence[str] = COMPOSITION_ATTRIBUTES,
    ) -> Composition:
        """Count ``frame``'s levels per ``segment_column`` value (rows without one: shop only)."""
        n = len(frame)
        if segment_column in frame:
            seg_codes, seg_names = _codes(frame[segment_column], segment_column)
        else:
            seg_codes, seg_names = np.full(n, -1, dtype=np.int64), []
        per_segment = np.bincount(seg_codes[seg_codes >= 0], minlength=len(seg_names))
        order = sorted(range(len(seg_names)), key=lambda i: (-int(per_segment[i]), seg_names[i]))
        sizes = pd.Series(
            [n, *(int(per_segment[i]) for i in order)],
            index=[ALL, *(seg_names[i] for i in order)],
            dtype="int64",
        )
        counts: dict[tuple[str, str], pd.Series] = {}
        for attribute in attributes:
            if attribute not in frame:
                continue
            codes, names = _codes(frame[attribute], attribute)
            known = codes >= 0
            if not known.any():
                continue
            width = len(names)
            counts[(ALL, attribute)] = _ordered(np.bincount(codes[known], minlength=width), names)
            both = known & (seg_codes >= 0)
            grid = np.bincount(
                seg_codes[both] * width + codes[both], minlength=len(seg_names) * width
            ).reshape(len(seg_names), width)
            for i, segment in enumerate(seg_names):
                if grid[i].any():
                    counts[(segment, attribute)] = _ordered(grid[i], names)
        return cls(counts, sizes, attributes)

    @property
    def segments(self) -> list[str]:
        return [str(s) for s in self.sizes.index[1:]]

    def levels(self, segment: str, attribute: str) -> pd.Series:
        """Level -> customers with a known value, most common first (ties: level order)."""
        return self.counts.get((segment, attribute), pd.Series(dtype="int64"))

    def known(self, segment: str, attribute: str) -> int:
        return int(self.levels(segment, attribute).sum())

    def lift(self, segment: str, attribute: str, level: str) -> float:
        """Share of known ``level`` in ``segment`` / the same in the whole shop (NaN: unknown)."""
        here, shop = self.levels(segment, attribute), self.levels(ALL, attribute)
        if level not in here.index or level not in shop.index:
            return float("nan")
        return float(here[level] / here.sum()) / float(shop[level] / shop.sum())

    def table(self, top: int = TOP_LEVELS) -> pd.DataFrame:
        """:data:`COLUMNS` rows: the whole shop, then each segment; per attribute the ``top``
        levels, ``(other)`` for the rest of the known values, ``(unknown)`` for the rest.
        """
        rows: list[tuple[object, ...]] = []
        for segment, size in self.sizes.items():
            for attribute in self.attributes:
                levels = self.levels(str(segment), attribute)
                known = int(levels.sum())
                for level, n in levels.head(top).items():
                    lift = self.lift(str(segment), attribute, str(level))
                    rows.append((segment, attribute, level, int(n), n / size, n / known, lift))
                rest = int(levels.iloc[top:].sum())
                if rest:
                    rows.append(
                        (segment, attribute, OTHER, rest, rest / size, rest / known, np.nan)
                    )
                if size - known:
                    unknown = int(size - known)
                    rows.append(
                        (segment, attribute, UNKNOWN, unknown, unknown / size, np.nan, np.nan)
                    )
        return pd.DataFrame(rows, columns=list(COLUMNS))

    def shares(self, attribute: str, levels: int = 5) -> pd.DataFrame:
        """Shares of all customers for plotting: rows ALL then the segments; columns the shop's
        ``levels`` most common levels, ``(other)`` and ``(unknown)`` (each row adds up to 1).
        """
        named = [str(level) for level in self.levels(ALL, attribute).index[:levels]]
        rows = []
        for segment, size in self.sizes.items():
            counts = self.levels(str(segment), attribute)
            row = {level: float(counts.get(level, 0)) for level in named}
            row[OTHER] = float(counts.sum()) - sum(row.values())
            row[UNKNOWN] = float(size - counts.sum())
            rows.append({k: v / size if size else 0.0 for k, v in row.items()})
        return pd.DataFrame(rows, index=self.sizes.index, columns=[*named, OTHER, UNKNOWN])

    def sentence(self, segment: str) -> str:
        """The segment's composition in words (module docstring)."""
        size = int(self.sizes.get(segment, 0))
        known = {a: self.known(segment, a) for a in self.attributes}
        if not any(known.values()):
            return NO_DEMOGRAPHICS
        usable = [a for a in self.attributes
                  if known[a] >= MIN_KNOWN and known[a] >= MIN_KNOWN_SHARE * size]  # fmt: skip
        if not usable:
            return (
                f"too few known values to describe (at most {max(known.values()):,} of "
                f"{size:,} customers known for any attribute, {MIN_KNOWN} needed)"
            )
        # Each usable attribute's most common level; the headline ones always, in their order.
        tops = {a: self._top(segment, a) for a in usable}
        words = {a: [tops[a][0]] for a in HEADLINE if a in tops}
        # Then the most distinctive of the rest, by lift: rarer levels of any attribute and
        # the most common level of the other attributes.
        extras = [(lift, a, text) for a in usable for lift, text in self._distinct(segment, a)]
        extras += [(tops[a][1], a, tops[a][0]) for a in usable if a not in HEADLINE]
        extras = [e for e in extras if e[0] >= DISTINCT_LIFT]
        extras.sort(key=lambda e: (-e[0], self.attributes.index(e[1])))
        for _, attribute, text in extras[:MAX_EXTRAS]:
            words.setdefault(attribute, []).append(text)
        return ", ".join(text for attribute in words for text in words[attribute])

    def sentences(self) -> dict[str, str]:
        """Segment -> :meth:`sentence`, largest segment first."""
        return {segment: self.sentence(segment) for segment in self.segments}

    def _top(self, segment: str, attribute: str) -> tuple[str, float]:
        """(the words for the attribute's most common level in the segment, its lift)."""
        levels = self.levels(segment, attribute)
        level, share = str(levels.index[0]), float(levels.iloc[0]) / float(levels.sum())
        lift = self.lift(segment, attribute, level)
        template = _PHRASES.get(attribute, ("{pct} {level}", ""))[0]
        return _fill(template, attribute, level, share, lift), lift

    def _distinct(self, segment: str, attribute: str) -> list[tuple[float, str]]:
        """(lift, words) of the levels after the most common that hold DISTINCT_SHARE."""
        levels = self.levels(segment, attribute)
        known = float(levels.sum())
        template = _PHRASES.get(attribute, ("", "{level} {pct}"))[1]
        out = []
        for level, n in levels.iloc[1:].items():
            if float(n) / known >= DISTINCT_SHARE:
                lift = self.lift(segment, attribute, str(level))
                out.append((lift, _fill(template, attribute, str(level), float(n) / known, lift)))
        return out


def _codes(values: pd.Series, attribute: str) -> tuple[np.ndarray, list[str]]:
    """(a level number per row, -1 where unknown; the levels): :func:`level_values`, computed
    once per distinct raw value (a million rows hold a handful), so counting is a bincount.
    """
    raw_codes, uniques = pd.factorize(values, use_na_sentinel=True)
    labels = level_values(pd.Series(np.asarray(uniques, dtype=object)), attribute)
    label_codes, names = pd.factorize(labels, use_na_sentinel=True)
    lookup = np.append(label_codes, -1).astype(np.int64)  # raw -1 (unknown) stays -1
    return lookup[raw_codes], [str(name) for name in names]


def _ordered(counts: np.ndarray, names: list[str]) -> pd.Series:
    """Level -> count of the levels present, most common first, ties in level order."""
    present = [(int(c), name) for c, name in zip(counts, names, strict=True) if c > 0]
    present.sort(key=lambda p: (-p[0], p[1]))
    return pd.Series([c for c, _ in present], index=[name for _, name in present], dtype="int64")


def _fill(template: str, attribute: str, level: str, share: float, lift: float) -> str:
    """One level in words, with its lift when that is notable (inside a closing parenthesis)."""
    shown = _CONSENT.get(level, level) if attribute == "marketing_consent" else level
    often = "mostly" if share >= 0.5 else "most often"
    words = template.format(pct=_pct(share), level=shown, often=often)
    if np.isfinite(lift) and (lift >= NOTE_LIFT or lift <= 1 / NOTE_LIFT):
        lift_words = f"{lift:.1f}x the shop"
        words = f"{words[:-1]}, {lift_words})" if words.endswith(")") else f"{words} ({lift_words})"
    return words


def describe_labels(frame: pd.DataFrame, labels: np.ndarray, k: int) -> list[str]:
    """The sentence of each segment id ``0..k-1`` of ``labels`` (one per row of ``frame``)."""
    labelled = frame.assign(_segment=np.asarray(labels).astype(str))
    composition = Composition.of(labelled, "_segment")
    return [composition.sentence(str(i)) if str(i) in composition.sizes.index
            else NO_DEMOGRAPHICS for i in range(k)]  # fmt: skip
