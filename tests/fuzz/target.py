"""The atheris target: one fuzz input is one batch of records for one decoder.

Input layout (what :mod:`.seeds` writes and :mod:`.mutator` keeps): the first byte picks the
decoder (``byte % 5``: orders, clicks, segment changes, dead letters, the control topic) and how
the records are held (bytes, bytearray or memoryview; a list or an iterator); the rest is the
records, split on ``SEP`` (``0xff``). A batch rather than one record, so that ``decode_many``'s
bookkeeping (indices, one bad record among good ones, the clock refresh) is exercised too.

Run as ``python -m tests.fuzz.target [libFuzzer flags] CORPUS_DIR...`` (the runner,
``python -m tests.fuzz``, does that with sensible flags); a file path instead of a directory
replays that one input, which is how a finding is reproduced.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import atheris
import msgspec

# Instrumented imports: atheris sees branch coverage only in modules imported here.
with atheris.instrument_imports(include=["schemas", "worker.scoring.control"]):
    import schemas
    from schemas.codec import MAX_EVENT_BYTES, MAX_REASON_CHARS
    from schemas.events import batch_clock
    from worker.scoring import control
    from worker.scoring.errors import ControlMessageInvalid

from tests.fuzz import SEP, TARGETS, mutator  # after the instrumented imports, on purpose

#: The decoders, in the order of ``TARGETS``; the control topic is the last target.
MODELS: tuple[type[Any], ...] = (
    schemas.OrderEvent,
    schemas.ClickEvent,
    schemas.SegmentChange,
    schemas.DeadLetter,
)
CONTROL = TARGETS.index("control")
LAST_RESORT = "could not be decoded: "

Record = bytes | bytearray | memoryview
#: Exception types of last-resort rejections already reported (each is printed once per run).
_last_resorts: set[str] = set()


def split(data: bytes) -> tuple[int, int, list[Record]]:
    """``(target, holder, records)``; record ``i`` is bytes, a bytearray or a memoryview, in
    rotation from ``holder``.

    The memoryview is a slice of a larger buffer, as a zero-copy consumer would hand over, so a
    decoder that read past the view's end would see the extra bytes.
    """
    holder, target = divmod(data[0], len(TARGETS))
    records: list[Record] = []
    for i, part in enumerate(data[1:].split(SEP)):
        kind = (holder + i) % 3
        if kind == 0:
            records.append(part)
        elif kind == 1:
            records.append(bytearray(part))
        else:
            records.append(memoryview(b"{" + part + b"}")[1:-1])
    return target, holder, records


def check_batch(model: type[Any], records: Sequence[Record], as_iterator: bool = False) -> None:
    """The properties of ``decode_many`` (module docstring of :mod:`schemas.codec`).

    ``as_iterator``: hand the records over as an iterator (the signature takes any iterable).
    """
    batch = iter(records) if as_iterator else records
    valid, rejected = schemas.decode_many(model, batch)  # must not raise, whatever the bytes
    valid_at = [index for index, _ in valid]
    rejected_at = [index for index, _ in rejected]
    assert valid_at == sorted(valid_at) and rejected_at == sorted(rejected_at), "not in order"
    assert sorted(valid_at + rejected_at) == list(range(len(records))), (
        f"indices {valid_at} + {rejected_at} for {len(records)} records"
    )
    for index, error in rejected:
        check_rejection(error, records[index])
    for _, event in valid:
        assert type(event) is model, f"{type(event).__name__} from a {model.__name__} batch"
        check_round_trip(model, event)
    check_single_decode_agrees(model, records, dict(valid), dict(rejected))


def check_rejection(error: schemas.SchemaError, record: Record) -> None:
    """A rejection is one ``SchemaError``: ``"$<path>: <reason>"``, the reason short and given."""
    assert isinstance(error, schemas.SchemaError), f"{type(error).__name__} in rejected"
    text = str(error)
    assert text.startswith("$") and error.path.startswith("$"), f"no JSONPath: {text!r}"
    assert text == f"{error.path}: {error.reason}", f"str is not 'path: reason': {text!r}"
    assert error.reason.strip(), f"empty reason: {text!r}"
    assert len(error.reason) <= MAX_REASON_CHARS, f"reason of {len(error.reason)} chars"
    if len(record) > MAX_EVENT_BYTES:
        assert error.reason.startswith("oversize: "), f"{len(record)} bytes: {text!r}"
    if error.reason.startswith(LAST_RESORT):
        report_last_resort(error.reason)


def report_last_resort(reason: str) -> None:
    """Tell once per run about a record only the last-resort ``except`` caught.

    Not a failure (the contract allows it, and the batch goes on), but each one is an exception
    no check foresaw and whose reason an operator may not understand: worth a look.
    """
    kind = reason[len(LAST_RESORT) :].partition(":")[0]
    if kind not in _last_resorts:
        _last_resorts.add(kind)
        print(f"fuzz: last-resort rejection: {reason}", file=sys.stderr, flush=True)


def check_round_trip(model: type[Any], event: Any) -> None:
    """A valid event re-encodes to canonical bytes that decode back to an equal event.

    The second decode reads the clock again: the future-time bound only moves later, so an event
    valid a moment ago stays valid. Re-encoding can grow a record (defaults written out, ``0``
    becomes ``0.0``), so one accepted just under the size limit can come back over it: then the
    refusal must be the size one, and decoding without the size guard must still agree.
    """
    encoded = schemas.encode(event)
    if len(encoded) > MAX_EVENT_BYTES:
        try:
            schemas.decode(model, encoded)
        except schemas.SchemaError as error:
            assert error.reason.startswith("oversize: "), str(error)
        else:
            raise AssertionError(f"{len(encoded)} bytes accepted")
        with batch_clock():
            again = msgspec.json.decode(encoded, type=model)
    else:
        with batch_clock():
            again = schemas.decode(model, encoded)
    assert again == event, f"round trip changed the event:\n{event!r}\n{again!r}"
    assert schemas.encode(again) == encoded, f"encoding is not canonical: {encoded!r}"


def check_single_decode_agrees(
    model: type[Any],
    records: Sequence[Record],
    valid: dict[int, Any],
    rejected: dict[int, schemas.SchemaError],
) -> None:
    """``decode`` of each record alone gives the batch's verdict (the two are separate code).

    The clock is read again, so a verdict on an event stamped right at the future-time bound may
    differ; only that reason is allowed to.
    """
    for index, record in enumerate(records):
        try:
            with batch_clock():
                alone = schemas.decode(model, record)
        except schemas.SchemaError as error:
            if index in rejected:
                assert str(error) == str(rejected[index]), f"{error} != {rejected[index]}"
            else:
                assert "in the future" in str(error), f"decode: {error}, decode_many: valid"
        else:
            if index in valid:
                assert alone == valid[index], f"{alone!r} != {valid[index]!r}"
            else:
                assert "in the future" in str(rejected[index]), f"{rejected[index]}, alone valid"


def check_control(records: Sequence[Record]) -> None:
    """``control.decode`` returns a control message or raises ``ControlMessageInvalid``."""
    for record in records:
        try:
            message = control.decode(record)  # type: ignore[arg-type]
        except ControlMessageInvalid:
            continue
        assert isinstance(message, dict), f"{type(message).__name__}"
        assert message.get("type") in control.TYPES, f"type {message.get('type')!r}"


def test_one_input(data: bytes) -> None:
    """The atheris entry point: any exception or failed assertion is a finding."""
    if not data:
        return
    target, holder, records = split(data)
    if target == CONTROL:
        check_control(records)
    else:
        check_batch(MODELS[target], records, as_iterator=holder % 2 == 1)


def main(argv: list[str], entry: Callable[[bytes], None] = test_one_input) -> None:
    """Start libFuzzer with ``argv`` (its flags and corpus dirs) and the JSON-aware mutator."""
    atheris.Setup(argv, entry, custom_mutator=mutator.mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
