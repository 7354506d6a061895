"""What every command shares: the consoles, the common options, error handling and output helpers.

A ``TransferkitError`` becomes one line on stderr and exit code 2 (``handle_errors``); ``--json``
output is exactly one JSON object on stdout (``print_json``).
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import TransferkitError

out = Console()
err = Console(stderr=True)

BackboneOpt = Annotated[str, typer.Option("--backbone", "-b", help="timm name, backbone card (.json), "
                                          "pretrain directory, alexnet or googlenet.")]
WeightsOpt = Annotated[Path | None, typer.Option("--weights", help="Local weights for a timm name "
                                                 "(.safetensors, or .pth/.pt loaded with weights_only=True).")]
OutsideOpt = Annotated[bool, typer.Option("--allow-outside-weights", help="Let a backbone card name a weights "
                                           "file outside its own folder (refused by default).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
CacheOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Feature store and decoded-image cache "
                                               "(default $TRANSFERKIT_CACHE or ~/.cache/transferkit).")]
DataArg = Annotated[str, typer.Argument(help="Image folder, split tree, .csv, .npz, CIFAR folder or 'digits'.")]
PrecisionOpt = Annotated[str, typer.Option(help="auto, bf16 or fp32.")]
RunDirArg = Annotated[Path, typer.Argument(help="A run directory written by `transferkit fit`.")]


def api_default(fn: Any, parameter: str) -> Any:
    """The Python API's default for ``parameter`` of ``fn``: the command line reuses it, so the two
    cannot drift apart."""
    return inspect.signature(fn).parameters[parameter].default


def handle_errors(fn):
    """Run a command; a TransferkitError becomes one clear line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TransferkitError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: run the same command again to resume where it stopped.")
            raise typer.Exit(130) from None

    return wrapper


def backbone_arg(spec: str, weights: Path | None = None, allow_outside: bool = False):
    """What --backbone names: a spec string for the API, or a built Backbone.

    ``random:SPEC`` is SPEC's architecture with random initialisation (a baseline for ``rank``);
    ``--weights`` loads a local file into a timm architecture.
    """
    from ..backbones import load_backbone

    if spec.startswith("random:"):
        return load_backbone(spec.removeprefix("random:"), pretrained=False)
    if weights is not None or allow_outside:
        return load_backbone(spec, weights=weights, allow_outside_weights=allow_outside)
    return spec


def built_backbone(spec: str, weights: Path | None = None, allow_outside: bool = False):
    """The Backbone that --backbone names, built now (for commands that use it directly)."""
    from ..backbones import load_backbone

    bb = backbone_arg(spec, weights, allow_outside)
    return load_backbone(bb) if isinstance(bb, str) else bb


def print_json(obj: Any) -> None:
    from ..io import _json_default

    sys.stdout.write(json.dumps(obj, default=_json_default) + "\n")


def csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def int_list(value: str | None, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in csv_list(value))
    except ValueError:
        from ..errors import ConfigError

        raise ConfigError(f"{option} takes comma-separated widths such as 512,256; got {value!r}.") from None


def metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("class")
    for col in ("precision", "recall", "f1", "support"):
        table.add_column(col, justify="right")
    for name, m in metrics.get("per_class", {}).items():
        table.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    table.caption = (f"accuracy {metrics['accuracy']:.4f}{interval(metrics.get('accuracy_interval'))} · balanced "
                     f"accuracy {metrics['balanced_accuracy']:.4f}{interval(metrics.get('balanced_accuracy_interval'))}"
                     f" · macro F1 {metrics['macro_f1']:.4f} · n={metrics['n']}"
                     + (" · 95% intervals: Wilson (accuracy), bootstrap over the images (balanced)"
                        if metrics.get("accuracy_interval") else ""))
    return table


def interval(bounds: Any) -> str:
    """`` [0.861, 0.950]`` for a recorded [low, high]; nothing for a run written before intervals existed."""
    if not bounds or len(bounds) != 2:
        return ""
    return f" [{bounds[0]:.3f}, {bounds[1]:.3f}]"

