"""The fuzz mutator itself: an exception in it would end a fuzz run as if it were a finding.

``atheris.Mutate`` needs a running fuzzer, so a plain byte flipper stands in for it here.
"""

from __future__ import annotations

import json
import random

from schemas import OrderEvent, decode, encode
from schemas.codec import MAX_EVENT_BYTES
from tests.fuzz import SEP, seeds
from tests.fuzz.mutator import Raw, dump, mutate, pad_to_limit

MAX_SIZE = MAX_EVENT_BYTES + 1024
_FLIPS = random.Random(5)


def flip_a_byte(data: bytes, max_size: int) -> bytes:
    changed = bytearray(data or b"\x00")
    changed[_FLIPS.randrange(len(changed))] = _FLIPS.randrange(256)
    return bytes(changed[:max_size])


def test_twenty_thousand_chained_mutations_of_the_seeds_never_raise_or_exceed_the_size() -> None:
    rng = random.Random(1)
    start = list(seeds.inputs())
    pool = list(start)
    changed = 0
    for _ in range(20_000):
        data = rng.choice(pool)
        out = mutate(data, MAX_SIZE, rng.randrange(2**32), flip_a_byte)
        assert isinstance(out, bytes) and len(out) <= MAX_SIZE
        changed += out != data
        pool = [*pool[-2000:], out] if len(pool) > 3000 else [*pool, out]
    assert changed > 15_000


def test_structured_mutations_keep_most_json_records_json_and_keep_the_selector() -> None:
    record = encode(seeds.good_order())
    data = b"\x00" + record + SEP + record
    still_json = 0
    for seed in range(500):
        out = mutate(data, MAX_SIZE, seed, flip_a_byte)
        for part in out[1:].split(SEP):
            try:
                json.loads(part)
                still_json += 1
            except (ValueError, RecursionError):  # not JSON, or nested past json's limit
                pass
    assert still_json > 500  # of ~1000 records: most changes are to content, not syntax


def test_numbers_keep_the_text_they_were_written_with() -> None:
    text = '{"a":1e400,"b":[0.10000000000000000555,-0],"c":NaN}'
    parsed = json.loads(text, parse_float=Raw, parse_int=Raw, parse_constant=Raw)
    assert dump(parsed) == text


def test_padding_puts_a_valid_order_one_byte_either_side_of_the_size_limit() -> None:
    text = encode(seeds.good_order()).decode()
    sizes = set()
    for seed in range(40):
        padded = pad_to_limit(text, random.Random(seed)).encode()
        sizes.add(len(padded))
        if padded.startswith(b'{"x":') and len(padded) <= MAX_EVENT_BYTES:
            assert isinstance(decode(OrderEvent, padded), OrderEvent)
    assert sizes == {MAX_EVENT_BYTES - 1, MAX_EVENT_BYTES, MAX_EVENT_BYTES + 1}
