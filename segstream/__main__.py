"""``python -m segstream`` is the ``segstream`` command."""

from segstream.cli import main

main()
