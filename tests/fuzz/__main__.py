"""``python -m tests.fuzz --seconds N [--corpus DIR]``: see :mod:`tests.fuzz.runner`."""

from tests.fuzz.runner import main

raise SystemExit(main())
