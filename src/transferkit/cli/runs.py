"""Commands on one run directory: ``fit`` writes it; ``evaluate``, ``predict`` and ``export`` use it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..api import TransferClassifier
from ..strategies import strategy_names
from .common import (
    BackboneOpt,
    CacheOpt,
    DataArg,
    DeviceOpt,
    JsonOpt,
    OutsideOpt,
    PrecisionOpt,
    QuietOpt,
    RunDirArg,
    WeightsOpt,
    api_default,
    backbone_arg,
    handle_errors,
    int_list,
    metrics_table,
    out,
    print_json,
)

# `fit --strategy` takes any registered strategy, or "auto" to let the advisor choose.
STRATEGY_HELP = ", ".join(strategy_names()) + " or auto."
DEFAULT_STRATEGY = api_default(TransferClassifier, "strategy")


@handle_errors
def fit(
    data: DataArg,
    backbone: BackboneOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
    weights: WeightsOpt = None,
    allow_outside_weights: OutsideOpt = False,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help=STRATEGY_HELP)] = DEFAULT_STRATEGY,
    layer: Annotated[str | None, typer.Option(help="Cut point for intermediate (e.g. stage3).")] = None,
    hidden: Annotated[str | None, typer.Option(help="Hidden FC widths, e.g. 512,256.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    freeze_stages: Annotated[int | None, typer.Option(help="partial: freeze the stem and the first K stages.")]
    = None,
    freeze_until: Annotated[str | None, typer.Option(help="partial: freeze up to and including this layer.")]
    = None,
    seed: Annotated[int, typer.Option()] = 0,
    precision: PrecisionOpt = "auto",
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    budget: Annotated[float | None, typer.Option(help="auto: minutes its fine-tuning trials may take "
                                                 "(default 5).")] = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a classifier with one strategy and score it on the held-out split."""
    params: dict[str, Any] = {}
    if freeze_until:
        params["freeze_until"] = freeze_until
    clf = TransferClassifier(backbone=backbone_arg(backbone, weights, allow_outside_weights), strategy=strategy,
                             layer=layer,
                             hidden=int_list(hidden, "--hidden"), epochs=epochs, lr=lr, batch_size=batch_size,
                             freeze_stages=freeze_stages, params=params, device=device, precision=precision,
                             cache_dir=cache_dir, seed=seed, progress=not quiet, budget=budget)
    clf.fit(data, run_dir=out_dir, resume=resume)
    result = run_summary(clf, out_dir)
    if as_json:
        print_json(result)
        return
    out.print(f"[bold]{clf.strategy_}[/] on {clf.backbone_.name}: {clf.split_.get('text', '')}")
    for line in (clf.advice_ or {}).get("selection", {}).get("reasons", []):
        out.print(f"  - {line}", highlight=False)
    if clf.metrics_:
        out.print(metrics_table(f"held-out '{clf.split_['scored']['name']}' split", clf.metrics_))
    out.print(f"run written to {out_dir}")


def run_summary(clf, run_dir: Path, metrics: dict | None = None, split: Any = None) -> dict[str, Any]:
    metrics = clf.metrics_ if metrics is None else metrics
    return {"strategy": clf.strategy_, "backbone": clf.backbone_.name, "backbone_spec": str(clf.backbone_.spec),
            "run_dir": str(run_dir), "split": split if split is not None else clf.split_,
            "params": clf.params_, "metrics": metrics, "fit_seconds": getattr(clf, "fit_seconds_", None),
            "advice": clf.advice_}


@handle_errors
def evaluate(
    run_dir: RunDirArg,
    data: Annotated[str, typer.Argument(help="Dataset to score (the held-out split: test if present, else val).")],
    split: Annotated[str | None, typer.Option(help="train, val, test or all.")] = None,
    allow_outside_weights: OutsideOpt = False,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a finished run on a dataset: accuracy, balanced accuracy, per-class P/R/F1, confusion matrix."""
    clf = TransferClassifier.load(run_dir, device=device, cache_dir=cache_dir,
                                  allow_outside_weights=allow_outside_weights)
    metrics = clf.evaluate(data, split=split)
    if as_json:
        print_json(run_summary(clf, run_dir, metrics, split=metrics["split"]))
        return
    out.print(metrics_table(f"{clf.strategy_} on '{metrics['split']['name']}' of {data}", metrics))
    cm = Table(title="confusion matrix (rows: true, columns: predicted)")
    cm.add_column("")
    for name in metrics["classes"]:
        cm.add_column(name, justify="right")
    for name, row in zip(metrics["classes"], metrics["confusion_matrix"], strict=True):
        cm.add_row(name, *map(str, row))
    out.print(cm)


@handle_errors
def predict(
    run_dir: RunDirArg,
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1)] = 1,
    allow_outside_weights: OutsideOpt = False,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Predict the class of images with a finished run."""
    from ..data import list_image_files

    clf = TransferClassifier.load(run_dir, device=device, allow_outside_weights=allow_outside_weights)
    files: list[Path] = []
    for p in paths:
        files.extend(list_image_files(p) if p.is_dir() else [p])
    proba = clf.predict_proba(files)
    k = min(top_k, proba.shape[1])
    rows = []
    for path, p in zip(files, proba, strict=True):
        order = p.argsort()[::-1][:k]
        rows.append({"path": str(path), "top": [{"class": clf.classes_[i], "probability": float(p[i])}
                                                for i in order]})
    if as_json:
        print_json({"run_dir": str(run_dir), "predictions": rows})
        return
    table = Table()
    table.add_column("image")
    table.add_column("prediction")
    for row in rows:
        table.add_row(row["path"], ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in row["top"]))
    out.print(table)


@handle_errors
def export(
    run_dir: RunDirArg,
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript.")] = "onnx",
    out_file: Annotated[Path | None, typer.Option("--out", help="Output file (default in RUN_DIR).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a finished run to ONNX or TorchScript, verified against PyTorch (max |diff| <= 1e-4)."""
    from ..export import export as run_export

    result = run_export(run_dir, fmt, out_file)
    info = {"path": str(result.path), "format": fmt, "max_abs_diff": result.max_abs_diff}
    if as_json:
        print_json(info)
        return
    out.print(f"{fmt} model written to {result.path} (max |logit difference| vs PyTorch "
              f"{result.max_abs_diff:.2e})")
