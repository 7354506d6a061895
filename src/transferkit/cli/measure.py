"""Commands that look at data and backbones without training a classifier: ``extract``,
``backbones``, ``advise`` and ``rank``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

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
    built_backbone,
    csv_list,
    handle_errors,
    out,
    print_json,
)


@handle_errors
def extract(
    data: DataArg,
    backbone: BackboneOpt,
    layers: Annotated[str, typer.Option(help="Comma-separated cut points, e.g. stage3,pool.")] = "pool",
    weights: WeightsOpt = None,
    allow_outside_weights: OutsideOpt = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="Also write the features to this .h5 file.")] = None,
    pool: Annotated[str, typer.Option(help="avg, or an integer g to pool to a g x g grid.")] = "avg",
    batch_size: Annotated[int | None, typer.Option(help="Default: 16 on CPU, 64 on CUDA.")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Images per stored chunk (the unit of resuming and "
                                                   "of sharding under torchrun). Default: about 256.")] = None,
    decode_cache: Annotated[bool, typer.Option("--decode-cache/--no-decode-cache", help="Keep the decoded "
                                               "images (N x 3 x H x W bytes) in the cache's decoded/ folder "
                                               "for later runs, or decode chunk by chunk.")] = True,
    precision: PrecisionOpt = "auto",
    device: DeviceOpt = "auto",
    runtime: Annotated[str, typer.Option(
        help="What runs the network: auto (on the CPU at fp32 OpenVINO, else ONNX Runtime, both exact "
             "within 1e-4 of PyTorch; else PyTorch), torch, openvino or onnxruntime.")] = "auto",
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Extract pooled features of several layers in one pass into the on-disk store.

    Under torchrun (e.g. torchrun --nproc_per_node 4 -m transferkit.cli extract ...) every process
    computes a share of the images and rank 0 prints the summary; the store is the one a single
    process writes.
    """
    from ..api import as_dataset
    from ..features import extract_features, write_feature_file
    from ..features.distributed import process_group
    from ..runtime import CacheLayout

    dataset = as_dataset(data)
    bb = built_backbone(backbone, weights, allow_outside_weights)
    names = csv_list(layers) or ["pool"]
    for name in names:
        bb.layer(name)
    with process_group(device) as (dev, shard):
        first = shard is None or shard.is_first
        fs = extract_features(bb, dataset, names, store_dir=CacheLayout.of(cache_dir).features,
                              batch_size=batch_size, chunk_size=chunk_size, device=dev, precision=precision,
                              pool=int(pool) if pool.isdigit() else pool, progress=not quiet and first,
                              decode_cache=decode_cache, runtime=runtime)
    if not first:
        return  # rank 0 reports for every process
    if out_file is not None:
        write_feature_file(fs, out_file)
    summary = {"backbone": bb.name, "data": str(dataset.root), "n_images": len(dataset),
               "layers": {k: list(v.shape) for k, v in fs.features.items()}, "from_cache": fs.from_cache,
               "precision": fs.precision, "runtime": fs.runtime,
               "processes": 1 if shard is None else shard.world,
               "out": str(out_file) if out_file else None, "skipped": [list(s) for s in dataset.skipped]}
    if as_json:
        print_json(summary)
        return
    for k, v in fs.features.items():
        out.print(f"{k}: {v.shape[0]} x {v.shape[1]}")
    where = f"; written to {out_file}" if out_file else ""
    out.print(("read from the store" if fs.from_cache else f"extracted ({fs.precision}, {fs.runtime})") + where)
    if dataset.skipped:
        out.print(f"skipped {len(dataset.skipped)} unreadable file(s): " +
                  "; ".join(f"{p} ({r})" for p, r in dataset.skipped[:5]))


@handle_errors
def backbones(
    cards: Annotated[list[Path] | None, typer.Argument(help="Folders to search for backbone cards.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """What can be built, and which backbones have weights on this machine."""
    from ..backbones import available_backbones

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


@handle_errors
def advise(
    data: DataArg,
    backbone: BackboneOpt,
    weights: WeightsOpt = None,
    allow_outside_weights: OutsideOpt = False,
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure size and similarity, score every feature-store candidate, and say what `auto` would do."""
    from ..api import TransferClassifier

    bb = built_backbone(backbone, weights, allow_outside_weights)
    clf = TransferClassifier(backbone=bb, strategy="auto", device=device, cache_dir=cache_dir, seed=seed,
                             progress=not quiet)
    selection = clf.plan(data)
    if as_json:
        print_json(selection.to_dict())
        return
    for line in selection.summary_lines():
        out.print(line, highlight=False)


@handle_errors
def rank(
    data: DataArg,
    backbones_: Annotated[str, typer.Option("--backbones", help="Comma-separated backbone specs; "
                                            "random:SPEC is SPEC's architecture with random weights.")],
    seed: Annotated[int, typer.Option()] = 0,
    device: DeviceOpt = "auto",
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Order candidate backbones by transferability (LogME, kNN, probe) without fine-tuning any."""
    from ..advisor import rank_backbones
    from ..api import as_dataset
    from ..runtime import CacheLayout

    dataset = as_dataset(data, seed=seed)
    specs = csv_list(backbones_)
    candidates = [backbone_arg(s) for s in specs]
    rows = rank_backbones(dataset, candidates, store_dir=CacheLayout.of(cache_dir).features,
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
