"""Coverage-guided fuzzing of the record decoders (issue "No record can stop the worker").

Modules, one job each (see docs/fuzzing.md):

* :mod:`.target`: the atheris target and the properties checked on every input;
* :mod:`.mutator`: the JSON-aware mutator (msgspec parses in C, where atheris sees no coverage);
* :mod:`.seeds`: the seed corpus and dictionary, built at run time from the test generators;
* :mod:`.__main__`: ``python -m tests.fuzz --seconds N [--corpus DIR]``, the runner;
* :mod:`.test_fuzz_short`: the short run the test suite makes.

Nothing here is imported by ``schemas`` or ``worker``; this package imports neither atheris nor
the code under test at import time, so that :mod:`.target` can instrument it when it does.
"""

#: Splits a fuzz input into records: ``0xff`` never occurs in UTF-8, so no valid JSON is lost,
#: and invalid UTF-8 still reaches the decoders through every other byte.
SEP = b"\xff"
#: What the first byte of a fuzz input selects (``byte % len(TARGETS)``).
TARGETS = ("orders", "clicks", "segment_changes", "dead_letters", "control")
