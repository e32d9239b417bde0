"""``python -m worker`` is the ``segstream`` command."""

from worker.cli import main

main()
