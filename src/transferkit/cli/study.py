"""Commands that run a whole study: ``compare`` (every strategy, one budget), ``pretrain`` (make a
source model) and ``demo`` (both, offline, on digits)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..compare import DEFAULT_SIZES, default_size_strategies, default_strategies
from ..compare import compare as run_compare
from .common import (
    BackboneOpt,
    CacheOpt,
    DataArg,
    DeviceOpt,
    JsonOpt,
    OutsideOpt,
    PrecisionOpt,
    QuietOpt,
    WeightsOpt,
    backbone_arg,
    csv_list,
    err,
    handle_errors,
    out,
    print_json,
)

# compare's own defaults (from the strategy registry), so the command line and the Python API
# run the same study.
DEFAULT_STRATEGIES = default_strategies()
DEFAULT_SIZE_STRATEGIES = default_size_strategies()


@handle_errors
def compare(
    data: DataArg,
    backbone: BackboneOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for result.json, report.html, runs/.")],
    weights: WeightsOpt = None,
    allow_outside_weights: OutsideOpt = False,
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies.")]
    = ",".join(DEFAULT_STRATEGIES),
    epochs: Annotated[int | None, typer.Option(help="Epoch budget for every trained strategy.")] = None,
    sizes: Annotated[str, typer.Option(help="Images per class for the data-size curves ('' to skip).")]
    = ",".join(map(str, DEFAULT_SIZES)),
    size_strategies: Annotated[str, typer.Option(help="Strategies drawn in the data-size curves.")]
    = ",".join(DEFAULT_SIZE_STRATEGIES),
    repeats: Annotated[int, typer.Option(help="Draws per strategy and data-size point: each re-draws the training "
                                          "subset and the seed; tables show the mean and a 95% interval.")] = 1,
    advise_: Annotated[bool, typer.Option("--advise/--no-advise", help="Run the advisor too.")] = True,
    seed: Annotated[int, typer.Option()] = 0,
    precision: PrecisionOpt = "auto",
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Every strategy under the same budget, split and seed; transfer benefit vs scratch; report.html."""
    result = run_compare(data, backbone_arg(backbone, weights, allow_outside_weights), out_dir,
                         strategies=csv_list(strategies),
                         epochs=epochs, sizes=[int(v) for v in csv_list(sizes)],
                         size_strategies=csv_list(size_strategies), repeats=repeats, advise=advise_, seed=seed,
                         device=device,
                         precision=precision, cache_dir=cache_dir, progress=not quiet,
                         log=(lambda m: None) if quiet or as_json else (lambda m: err.print(f"[dim]{m}[/]")))
    if as_json:
        print_json(compact_result(result))
        return
    print_comparison(result)


def compact_result(result: dict[str, Any]) -> dict[str, Any]:
    """The comparison without per-epoch histories and per-class tables (those are in result.json)."""
    sig = result.get("significance") or {}
    summary = sig.get("summary") or {}
    return {
        "report": result.get("report"), "best_strategy": result.get("best_strategy"),
        "best": {k: sig["best"][k] for k in ("strategy", "clear", "top_group")} if sig.get("best") else None,
        "split": result.get("split"), "backbone": result.get("backbone"), "repeats": result.get("repeats", 1),
        "strategies": {n: {"accuracy": s["metrics"].get("accuracy"),
                           "balanced_accuracy": s["metrics"].get("balanced_accuracy"), "seconds": s.get("seconds"),
                           **({"mean_accuracy": summary[n]["accuracy"],
                               "mean_balanced_accuracy": summary[n]["balanced_accuracy"]} if n in summary else {})}
                       for n, s in result.get("strategies", {}).items()},
        "vs_baseline": {n: {k: d[k] for k in ("diff", "low", "high", "p", "decision", "text")}
                        for n, d in (sig.get("vs_baseline") or {}).items()},
        "benefit": {n: {k: row.get(k) for k in ("start", "slope", "auc", "asymptote", "delta", "negative_transfer")}
                    for n, row in (result.get("benefit") or {}).get("strategies", {}).items()},
        "data_size": result.get("data_size"),
        "advisor": {k: (result.get("advisor") or {}).get(k) for k in ("strategy", "layer", "frozen_stages")},
    }


def interval_text(stat: dict[str, Any] | None) -> str:
    """``0.915 [0.861, 0.950]`` from ``{"mean", "low", "high"}``; the mean alone when there is no interval."""
    if not stat or stat.get("mean") is None:
        return "—"
    if stat.get("low") is None or stat["low"] != stat["low"]:  # nan: one draw of a number without images
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} [{stat['low']:.3f}, {stat['high']:.3f}]"


def print_comparison(result: dict[str, Any]) -> None:
    repeats = result.get("repeats", 1)
    draws = f"mean of {repeats} draws, " if repeats > 1 else ""
    table = Table(title=f"held-out '{result['split']['scored']}' accuracy ({result['split']['n_scored']} images; "
                        f"{draws}95% interval)")
    for col in ("strategy", "accuracy", "balanced", "start", "slope/epoch", "asymptote", "train s"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    benefit = (result.get("benefit") or {}).get("strategies", {})
    sig = result.get("significance") or {}
    summary = sig.get("summary") or {}

    def fmt(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    for name, s in result["strategies"].items():
        b = benefit.get(name, {})
        m = s["metrics"]
        acc = summary.get(name, {}).get("accuracy") or {"mean": m.get("accuracy"), "low": None}
        bal = summary.get(name, {}).get("balanced_accuracy") or {"mean": m.get("balanced_accuracy"), "low": None}
        table.add_row(name, interval_text(acc), interval_text(bal), fmt(b.get("start")), fmt(b.get("slope")),
                      fmt(b.get("asymptote")), f"{s.get('seconds', 0):.0f}")
    out.print(table)
    for d in (sig.get("vs_baseline") or {}).values():
        out.print(f"  {d['text']}", highlight=False)
    best = sig.get("best")
    if best:
        if best["clear"]:
            out.print(f"best: {best['strategy']} (measurably better than every other strategy)")
        else:
            out.print(f"best: no single winner; not measurably different from the top: {', '.join(best['top_group'])}")
    if result.get("advisor"):
        out.print(f"advisor: {result['advisor'].get('strategy')} (layer {result['advisor'].get('layer')}, "
                  f"frozen stages {result['advisor'].get('frozen_stages')})")
    out.print(f"report: {result.get('report')}")


@handle_errors
def pretrain(
    source: Annotated[str, typer.Argument(help="The data-rich source task (any dataset transferkit loads).")],
    arch: Annotated[str, typer.Option(help="timm architecture, or tk_smallcnn for small images such as digits.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Backbone folder to write (card + weights).")],
    epochs: Annotated[int, typer.Option()] = 10,
    lr: Annotated[float, typer.Option()] = 3e-3,
    batch_size: Annotated[int, typer.Option()] = 64,
    flip: Annotated[bool, typer.Option(help="Horizontal-flip augmentation (off for digits and text).")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = "auto",
    resume: Annotated[bool, typer.Option(help="Continue an interrupted pretraining in --out.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Develop-model approach: train a source model on SOURCE; use --out as --backbone afterwards."""
    from ..io import read_json
    from ..pretrain import default_pretrain_config
    from ..pretrain import pretrain as run_pretrain

    config = default_pretrain_config(epochs=epochs, lr=lr, batch_size=batch_size, flip=flip, seed=seed)
    run_pretrain(source, arch, out_dir, config, device=device, progress=not quiet, resume=resume)
    metrics = read_json(out_dir / "pretrain_metrics.json")
    metrics.pop("history", None)
    if as_json:
        print_json({"backbone_dir": str(out_dir), **metrics})
        return
    out.print(f"source model written to {out_dir}: {metrics['architecture']} on {metrics['source_dataset']}, "
              f"held-out source accuracy {metrics['source_val_acc']:.4f} (best epoch {metrics['best_epoch']})")
    out.print(f"use it with: transferkit fit TARGET --backbone {out_dir} --strategy partial --out RUN")


@handle_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes its runs and report.")]
    = Path("tk-demo"),
    backbone: Annotated[str | None, typer.Option("--backbone", "-b", help="Your backbone (with --data).")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Your dataset (with --backbone).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epoch budget per trained strategy.")] = None,
    repeats: Annotated[int, typer.Option(help="Draws per strategy and labels-per-class point.")] = 3,
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The whole study offline: pretrain on digits 0-4, transfer to 5-9, advise, compare, report."""
    from ..demo import run_demo

    head = run_demo(out_dir, backbone=backbone, data=data, epochs=epochs, seed=seed, repeats=repeats, device=device,
                    progress=not quiet,
                    log=(lambda m: None) if quiet or as_json else (lambda m: err.print(f"[dim]{m}[/]")))
    if as_json:
        print_json(head)
        return
    if "source" in head:
        src = head["source"]
        out.print(f"source model: tk_smallcnn pretrained on {src['task']} ({src['n_images']} images), "
                  f"held-out source accuracy {src['val_accuracy']:.3f}")
    draws = f", mean of {head['repeats']} draws" if head["repeats"] > 1 else ""
    out.print(f"target: scored on {head['scored_on']} (95% intervals{draws})", highlight=False)
    for name, acc in head["accuracy"].items():
        star = "  <- best" if name in (head["best"]["top_group"] or []) else ""
        out.print(f"  {name:<13} {interval_text(acc)}{star}", highlight=False)
    if head.get("by_size"):
        out.print("labels per class: best transfer strategy minus scratch, points [95% interval]:")
        for size, d in head["by_size"].items():
            out.print(f"  {size:>4}  {d['strategy']:<13} {100 * d['diff']:+6.1f} [{100 * d['low']:+.1f}, "
                      f"{100 * d['high']:+.1f}]  {d['verdict']}", highlight=False)
        up = head.get("scratch_catches_up")
        out.print("scratch never catches up in the measured range" if up is None else
                  f"scratch catches up from {up} labels per class on")
    out.print(head["headline"], highlight=False)
    if head.get("advisor"):
        a = head["advisor"]
        rank = "among the best" if a["among_the_best"] else "not among the best"
        out.print(f"advisor chose {a['strategy']} ({rank}): {a['why']}", highlight=False)
    out.print(f"report: {head['report']}  ({head['seconds']:.0f} s)")
