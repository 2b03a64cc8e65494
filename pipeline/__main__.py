"""``python -m pipeline`` is the ``infersentry`` command."""

from pipeline.cli import main

main()
