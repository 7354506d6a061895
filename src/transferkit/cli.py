"""The ``transferkit`` command line: a thin typer layer over the Python API.

This is the only module that prints tables or exits. Every command turns a
``TransferkitError`` into one line on stderr and exit code 2; ``--json`` prints exactly one
JSON object on stdout so scripts can parse it.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .errors import TransferkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Transfer learning for CNN image classifiers, as a measured decision.")
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
    from .backbones import load_backbone

    if spec.startswith("random:"):
        return load_backbone(spec.removeprefix("random:"), pretrained=False)
    if weights is not None or allow_outside:
        return load_backbone(spec, weights=weights, allow_outside_weights=allow_outside)
    return spec


def built_backbone(spec: str, weights: Path | None = None, allow_outside: bool = False):
    """The Backbone that --backbone names, built now (for commands that use it directly)."""
    from .backbones import load_backbone

    bb = backbone_arg(spec, weights, allow_outside)
    return load_backbone(bb) if isinstance(bb, str) else bb


def print_json(obj: Any) -> None:
    from .io import _json_default

    sys.stdout.write(json.dumps(obj, default=_json_default) + "\n")


def csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def int_list(value: str | None, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in csv_list(value))
    except ValueError:
        from .errors import ConfigError

        raise ConfigError(f"{option} takes comma-separated widths such as 512,256; got {value!r}.") from None


def metrics_table(title: str, metrics: dict[str, Any]) -> Table:
    table = Table(title=title)
    table.add_column("class")
    for col in ("precision", "recall", "f1", "support"):
        table.add_column(col, justify="right")
    for name, m in metrics.get("per_class", {}).items():
        table.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]))
    table.caption = (f"accuracy {metrics['accuracy']:.4f} · balanced accuracy {metrics['balanced_accuracy']:.4f}"
                     f" · macro F1 {metrics['macro_f1']:.4f} · n={metrics['n']}")
    return table


# ------------------------------------------------------------------------------ commands
@app.command()
@handle_errors
def extract(
    data: Annotated[str, typer.Argument(help="Image folder, split tree, .csv, .npz, CIFAR folder or 'digits'.")],
    backbone: BackboneOpt,
    layers: Annotated[str, typer.Option(help="Comma-separated cut points, e.g. stage3,pool.")] = "pool",
    weights: WeightsOpt = None,
    allow_outside_weights: OutsideOpt = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="Also write the features to this .h5 file.")] = None,
    pool: Annotated[str, typer.Option(help="avg, or an integer g to pool to a g x g grid.")] = "avg",
    batch_size: Annotated[int | None, typer.Option(help="Default: 16 on CPU, 64 on CUDA.")] = None,
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp32.")] = "auto",
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Extract pooled features of several layers in one pass into the on-disk store."""
    from .api import as_dataset, default_cache_dir
    from .features import extract_features, write_feature_file

    dataset = as_dataset(data)
    bb = built_backbone(backbone, weights, allow_outside_weights)
    names = csv_list(layers) or ["pool"]
    for name in names:
        bb.layer(name)
    fs = extract_features(bb, dataset, names, store_dir=(cache_dir or default_cache_dir()) / "features",
                          batch_size=batch_size, device=device, precision=precision,
                          pool=int(pool) if pool.isdigit() else pool, progress=not quiet)
    if out_file is not None:
        write_feature_file(fs, out_file)
    summary = {"backbone": bb.name, "data": str(dataset.root), "n_images": len(dataset),
               "layers": {k: list(v.shape) for k, v in fs.features.items()}, "from_cache": fs.from_cache,
               "out": str(out_file) if out_file else None, "skipped": [list(s) for s in dataset.skipped]}
    if as_json:
        print_json(summary)
        return
    for k, v in fs.features.items():
        out.print(f"{k}: {v.shape[0]} x {v.shape[1]}")
    where = f"; written to {out_file}" if out_file else ""
    out.print(("read from the store" if fs.from_cache else "extracted") + where)
    if dataset.skipped:
        out.print(f"skipped {len(dataset.skipped)} unreadable file(s): " +
                  "; ".join(f"{p} ({r})" for p, r in dataset.skipped[:5]))


@app.command()
@handle_errors
def fit(
    data: Annotated[str, typer.Argument(help="Image folder, split tree, .csv, .npz, CIFAR folder or 'digits'.")],
    backbone: BackboneOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
    weights: WeightsOpt = None,
    allow_outside_weights: OutsideOpt = False,
    strategy: Annotated[str, typer.Option("--strategy", "-s",
                                          help="linear, intermediate, hidden, partial, full, scratch or auto.")]
    = "linear",
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
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp32.")] = "auto",
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a classifier with one strategy and score it on the held-out split."""
    from .api import TransferClassifier

    params: dict[str, Any] = {}
    if freeze_until:
        params["freeze_until"] = freeze_until
    clf = TransferClassifier(backbone=backbone_arg(backbone, weights, allow_outside_weights), strategy=strategy,
                             layer=layer,
                             hidden=int_list(hidden, "--hidden"), epochs=epochs, lr=lr, batch_size=batch_size,
                             freeze_stages=freeze_stages, params=params, device=device, precision=precision,
                             cache_dir=cache_dir, seed=seed, progress=not quiet)
    clf.fit(data, run_dir=out_dir, resume=resume)
    result = run_summary(clf, out_dir)
    if as_json:
        print_json(result)
        return
    out.print(f"[bold]{clf.strategy_}[/] on {clf.backbone_.name}: {clf.split_.get('text', '')}")
    if clf.metrics_:
        out.print(metrics_table(f"held-out '{clf.split_['scored']['name']}' split", clf.metrics_))
    out.print(f"run written to {out_dir}")


def run_summary(clf, run_dir: Path, metrics: dict | None = None, split: Any = None) -> dict[str, Any]:
    metrics = clf.metrics_ if metrics is None else metrics
    return {"strategy": clf.strategy_, "backbone": clf.backbone_.name, "backbone_spec": str(clf.backbone_.spec),
            "run_dir": str(run_dir), "split": split if split is not None else clf.split_,
            "params": clf.params_, "metrics": metrics, "fit_seconds": getattr(clf, "fit_seconds_", None),
            "advice": clf.advice_}


@app.command()
@handle_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `transferkit fit`.")],
    data: Annotated[str, typer.Argument(help="Dataset to score (the held-out split: test if present, else val).")],
    split: Annotated[str | None, typer.Option(help="train, val, test or all.")] = None,
    allow_outside_weights: OutsideOpt = False,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a finished run on a dataset: accuracy, balanced accuracy, per-class P/R/F1, confusion matrix."""
    from .api import TransferClassifier

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


@app.command()
@handle_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `transferkit fit`.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1)] = 1,
    allow_outside_weights: OutsideOpt = False,
    device: DeviceOpt = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Predict the class of images with a finished run."""
    from .api import TransferClassifier
    from .data import list_image_files

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


@app.command()
@handle_errors
def backbones(
    cards: Annotated[list[Path] | None, typer.Argument(help="Folders to search for backbone cards.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What can be built, and which backbones have weights on this machine."""
    from .backbones import available_backbones

    rows = available_backbones(search_dirs=tuple(cards or ()))
    if as_json:
        print_json(rows)
        return
    table = Table(title="backbones")
    for col in ("name", "kind", "weights here", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r.get("name")), str(r.get("kind", "")),
                      "yes" if r.get("weights_available") else "no", str(r.get("source", r.get("path", ""))))
    out.print(table)


@app.command()
@handle_errors
def advise(
    data: Annotated[str, typer.Argument(help="Image folder, split tree, .csv, .npz, CIFAR folder or 'digits'.")],
    backbone: BackboneOpt,
    weights: WeightsOpt = None,
    allow_outside_weights: OutsideOpt = False,
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure size and similarity to the backbone's source data, and plan the strategy (with reasons)."""
    from .advisor import advise as run_advisor
    from .api import as_dataset, default_cache_dir

    dataset = as_dataset(data, seed=seed)
    bb = built_backbone(backbone, weights, allow_outside_weights)
    advice = run_advisor(dataset, bb, store_dir=(cache_dir or default_cache_dir()) / "features", device=device,
                         seed=seed, progress=not quiet)
    if as_json:
        print_json(advice.to_dict())
        return
    for line in advice.summary_lines():
        out.print(line, highlight=False)


@app.command()
@handle_errors
def rank(
    data: Annotated[str, typer.Argument(help="Image folder, split tree, .csv, .npz, CIFAR folder or 'digits'.")],
    backbones_: Annotated[str, typer.Option("--backbones", help="Comma-separated backbone specs; "
                                            "random:SPEC is SPEC's architecture with random weights.")],
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Order candidate backbones by transferability (LogME, kNN, probe) without fine-tuning any."""
    from .advisor import rank_backbones
    from .api import as_dataset, default_cache_dir

    dataset = as_dataset(data, seed=seed)
    specs = csv_list(backbones_)
    candidates = [backbone_arg(s) for s in specs]
    rows = rank_backbones(dataset, candidates, store_dir=(cache_dir or default_cache_dir()) / "features",
                          device=device, seed=seed, progress=not quiet)
    for row in rows:  # name candidates the way the user wrote them
        row["spec"] = specs[row.pop("input_index")]
    if as_json:
        print_json({"data": str(dataset.root), "ranking": rows})
        return
    table = Table(title=f"backbones ranked for {dataset.name} (training split, pooled features)")
    for col in ("rank", "backbone", "LogME", "kNN acc", "probe acc", "score"):
        table.add_column(col, justify="right" if col != "backbone" else "left")
    for row in rows:
        table.add_row(str(row["rank"]), row["spec"], f"{row['logme']:.3f}", f"{row['knn_acc']:.3f}",
                      f"{row['probe_acc']:.3f}", f"{row['rank_score']:.3f}")
    out.print(table)


@app.command()
@handle_errors
def compare(
    data: Annotated[str, typer.Argument(help="Image folder, split tree, .csv, .npz, CIFAR folder or 'digits'.")],
    backbone: BackboneOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for result.json, report.html, runs/.")],
    weights: WeightsOpt = None,
    allow_outside_weights: OutsideOpt = False,
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies.")]
    = "linear,intermediate,partial,full,scratch",
    epochs: Annotated[int | None, typer.Option(help="Epoch budget for every trained strategy.")] = None,
    sizes: Annotated[str, typer.Option(help="Images per class for the data-size curves ('' to skip).")]
    = "5,10,25,50",
    size_strategies: Annotated[str, typer.Option(help="Strategies drawn in the data-size curves.")]
    = "linear,partial",
    advise_: Annotated[bool, typer.Option("--advise/--no-advise", help="Run the advisor too.")] = True,
    seed: Annotated[int, typer.Option()] = 0,
    precision: Annotated[str, typer.Option(help="auto, bf16 or fp32.")] = "auto",
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Every strategy under the same budget, split and seed; transfer benefit vs scratch; report.html."""
    from .compare import compare as run_compare

    result = run_compare(data, backbone_arg(backbone, weights, allow_outside_weights), out_dir,
                         strategies=csv_list(strategies),
                         epochs=epochs, sizes=[int(v) for v in csv_list(sizes)],
                         size_strategies=csv_list(size_strategies), advise=advise_, seed=seed, device=device,
                         precision=precision, cache_dir=cache_dir, progress=not quiet,
                         log=(lambda m: None) if quiet or as_json else (lambda m: err.print(f"[dim]{m}[/]")))
    if as_json:
        print_json(compact_result(result))
        return
    print_comparison(result)


def compact_result(result: dict[str, Any]) -> dict[str, Any]:
    """The comparison without per-epoch histories and per-class tables (those are in result.json)."""
    return {
        "report": result.get("report"), "best_strategy": result.get("best_strategy"),
        "split": result.get("split"), "backbone": result.get("backbone"),
        "strategies": {n: {"accuracy": s["metrics"].get("accuracy"),
                           "balanced_accuracy": s["metrics"].get("balanced_accuracy"), "seconds": s.get("seconds")}
                       for n, s in result.get("strategies", {}).items()},
        "benefit": {n: {k: row.get(k) for k in ("start", "slope", "auc", "asymptote", "delta", "negative_transfer")}
                    for n, row in (result.get("benefit") or {}).get("strategies", {}).items()},
        "data_size": result.get("data_size"),
        "advisor": {k: (result.get("advisor") or {}).get(k) for k in ("strategy", "layer", "frozen_stages")},
    }


def print_comparison(result: dict[str, Any]) -> None:
    table = Table(title=f"held-out '{result['split']['scored']}' accuracy ({result['split']['n_scored']} images)")
    for col in ("strategy", "accuracy", "balanced", "start", "slope/epoch", "asymptote", "train s"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    benefit = (result.get("benefit") or {}).get("strategies", {})

    def fmt(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    for name, s in result["strategies"].items():
        b = benefit.get(name, {})
        table.add_row(name, fmt(s["metrics"].get("accuracy")), fmt(s["metrics"].get("balanced_accuracy")),
                      fmt(b.get("start")), fmt(b.get("slope")), fmt(b.get("asymptote")), f"{s.get('seconds', 0):.0f}")
    out.print(table)
    for b in benefit.values():
        if b.get("summary"):
            out.print(f"  {b['summary']}", highlight=False)
    if result.get("advisor"):
        out.print(f"advisor: {result['advisor'].get('strategy')} (layer {result['advisor'].get('layer')}, "
                  f"frozen stages {result['advisor'].get('frozen_stages')})")
    out.print(f"report: {result.get('report')}")


@app.command()
@handle_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `transferkit fit`.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript.")] = "onnx",
    out_file: Annotated[Path | None, typer.Option("--out", help="Output file (default in RUN_DIR).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a finished run to ONNX or TorchScript, verified against PyTorch (max |diff| <= 1e-4)."""
    from .export import export as run_export

    result = run_export(run_dir, fmt, out_file)
    info = {"path": str(result.path), "format": fmt, "max_abs_diff": result.max_abs_diff}
    if as_json:
        print_json(info)
        return
    out.print(f"{fmt} model written to {result.path} (max |logit difference| vs PyTorch "
              f"{result.max_abs_diff:.2e})")


@app.command()
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
    from .io import read_json
    from .pretrain import default_pretrain_config
    from .pretrain import pretrain as run_pretrain

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


@app.command()
@handle_errors
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes its runs and report.")]
    = Path("tk-demo"),
    backbone: Annotated[str | None, typer.Option("--backbone", "-b", help="Your backbone (with --data).")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Your dataset (with --backbone).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epoch budget per trained strategy.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The whole study offline: pretrain on digits 0-4, transfer to 5-9, advise, compare, report."""
    from .demo import run_demo

    head = run_demo(out_dir, backbone=backbone, data=data, epochs=epochs, seed=seed, device=device,
                    progress=not quiet,
                    log=(lambda m: None) if quiet or as_json else (lambda m: err.print(f"[dim]{m}[/]")))
    if as_json:
        print_json(head)
        return
    if "source" in head:
        src = head["source"]
        out.print(f"source model: tk_smallcnn pretrained on {src['task']} ({src['n_images']} images), "
                  f"held-out source accuracy {src['val_accuracy']:.3f}")
    out.print(f"target: scored on {head['scored_on']}")
    for name, acc in head["accuracy"].items():
        out.print(f"  {name:<13} {acc:.3f}" + ("  <- best" if name == head["best_strategy"] else ""))
    if "transfer_gain_points" in head:
        out.print(f"best transferred strategy ({head['best_transfer']}) vs training from scratch: "
                  f"{head['transfer_gain_points']:+.1f} points on all training images")
    if head.get("at_10_per_class"):
        out.print("with 10 training images per class: " +
                  ", ".join(f"{k} {v:.3f}" for k, v in head["at_10_per_class"].items()))
    out.print(f"advisor recommended: {head.get('advisor')}")
    out.print(f"report: {head['report']}  ({head['seconds']:.0f} s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
