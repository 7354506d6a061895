"""``python -m transferkit.cli``: the same as the ``transferkit`` console script."""

from . import main

main()
