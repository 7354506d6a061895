"""``import-keras``: bring Keras Applications weights (``~/.keras/models/*.h5``, Keras 3
``.weights.h5`` or ``.keras``) as a backbone folder that every command takes as ``--backbone DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, handle_errors, out, print_json

_ARCHS = "vgg16, vgg19, resnet50, inception_v3, mobilenet, mobilenet_v2"


@handle_errors
def import_keras(
    file: Annotated[Path, typer.Argument(help="Keras weights: .h5 (Keras 2 / Keras Applications download), "
                                         ".weights.h5 (Keras 3) or .keras.")],
    arch: Annotated[str, typer.Option(help=f"The Keras Applications model that saved FILE: {_ARCHS}.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write backbone.json + weights.safetensors.")],
    alpha: Annotated[float | None, typer.Option(help="Width of mobilenet (0.25, 0.5, 0.75, 1.0) or "
                                                "mobilenet_v2 (0.35, 0.5, 0.75, 1.0, 1.3, 1.4); default 1.0.")] = None,
    include_top: Annotated[bool, typer.Option("--include-top", help="Keep the classifier (the source head the "
                                              "advisor's similarity signal uses; VGG: also fc1/fc2).")] = False,
    name: Annotated[str | None, typer.Option(help="Backbone name (default: the folder's name).")] = None,
    source_dataset: Annotated[str, typer.Option(help="What the weights were trained on.")] = "imagenet-1k",
    as_json: JsonOpt = False,
) -> None:
    """Convert Keras Applications weights into a backbone folder (card + safetensors), read with h5py."""
    from ..backbones import load_backbone
    from ..backbones.keras import import_keras as run_import

    card = run_import(file, arch, out_dir, alpha=alpha, include_top=include_top, name=name,
                      source_dataset=source_dataset)
    bb = load_backbone(out_dir)
    summary = {"card": str(card), "backbone": str(out_dir), "architecture": bb.arch,
               "num_features": bb.num_features, "num_classes": bb.num_classes, "layers": bb.layer_names,
               "preprocessing": bb.preprocessing.to_dict()}
    if as_json:
        print_json(summary)
        return
    out.print(f"wrote {card} ({bb.arch}, {bb.num_features} features"
              + (f", {bb.num_classes}-class source head" if bb.num_classes else ", no classifier") + ")")
    out.print(f"cut points: {', '.join(bb.layer_names)}")
    out.print(f"use it as: --backbone {out_dir}", highlight=False)
