"""The ``transferkit`` command line: a thin typer layer over the Python API.

This package is the only part of transferkit that prints tables or exits. Every command turns
a ``TransferkitError`` into one line on stderr and exit code 2; ``--json`` prints exactly one
JSON object on stdout so scripts can parse it.

``common`` holds what the commands share; the commands live by what they work on: ``measure``
(data and backbones, no training), ``runs`` (one run directory), ``study`` (whole studies),
``imports`` (weights from elsewhere: ``import-keras``).
Option defaults that name strategies are read from the registry and the Python API
(``TransferClassifier``, ``compare``), so the command line cannot drift from them.
"""

from __future__ import annotations

import typer

from .imports import import_keras
from .measure import advise, backbones, extract, rank
from .runs import evaluate, export, fit, predict
from .study import compare, demo, pretrain

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transfer learning for CNN image classifiers, as a measured decision.")

# Registered here, in one list, so `transferkit --help` lists the commands in this order.
for _command in (extract, fit, evaluate, predict, backbones, advise, rank, compare, export, pretrain, demo,
                 import_keras):
    app.command()(_command)


def main() -> None:
    app()


__all__ = ["app", "main"]
