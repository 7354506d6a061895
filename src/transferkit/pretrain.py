"""The develop-model approach: train a backbone from scratch on a data-rich source task.

``pretrain(source, arch, out_dir)`` trains ``arch`` (any timm name, or transferkit's
``tk_smallcnn`` for 28x28 / 8x8 digits at 32x32) from random initialisation on ``source`` with
the same engine as fine-tuning, then writes a backbone folder (``backbone.json`` card +
``weights.safetensors``, via ``backbones.save_backbone_dir``, source head included) and
``pretrain_metrics.json``. Every command accepts that folder as ``--backbone``.

The source task's own held-out split (a stratified ``val_fraction`` of it) selects the best
epoch; its accuracy is reported as the source accuracy.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from .data.roles import duplicate_ids, stratified_carve
from .engine import ArrayData, TrainConfig, fit_network
from .errors import ConfigError, DataError
from .io import atomic_write_json

PRETRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 64,
    "lr": 3e-3,
    "body_lr_ratio": 1.0,
    "weight_decay": 0.05,
    "warmup_epochs": 1.0,
    "bn_policy": "train",
    "flip": False,  # digits must not be flipped; pass flip=True for natural images
}


def default_pretrain_config(**overrides: Any) -> TrainConfig:
    return TrainConfig(**{**PRETRAIN_DEFAULTS, **overrides})


def pretrain(
    source: Any,
    arch: str,
    out_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int | None = None,
    device: str = "auto",
    progress: bool = True,
    resume: bool = False,
    name: str | None = None,
) -> Path:
    """Train ``arch`` from scratch on ``source`` (an ImageDataset or a load_dataset spec); returns ``out_dir``.

    ``config`` defaults to :func:`default_pretrain_config` (10 epochs, AdamW 3e-3, no flip).
    Checkpoints go to ``out_dir/pretrain_run`` so ``resume=True`` continues an interrupted run.
    """
    from .backbones import load_backbone, save_backbone_dir
    from .backbones.smallcnn import register_smallcnn

    register_smallcnn()
    config = config or default_pretrain_config(**({"seed": seed} if seed is not None else {}))
    if seed is not None and config.seed != seed:
        config = dataclasses.replace(config, seed=seed)
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"The 'val_fraction' parameter must be in [0, 1). Got {val_fraction!r} instead.")
    if isinstance(source, str | os.PathLike):
        from .data import load_dataset

        source = load_dataset(source, seed=config.seed)
    out = Path(out_dir)
    backbone = load_backbone(arch, pretrained=False, seed=config.seed)
    pre = backbone.preprocessing
    images = source.decode(tuple(pre.input_size[1:]), pre.interpolation, progress=progress)
    labels = np.asarray(source.labels, dtype=np.int64)
    if len(images) != len(labels):
        raise DataError(f"{len(labels) - len(images)} images of {source.name!r} failed to decode; reload it.")
    # Per class round(val_fraction * n) duplicate groups select the epoch (classes of one image
    # give none); exact duplicates stay on one side so selection never sees a training image.
    tr, va = stratified_carve(labels, val_fraction, config.seed, group_ids=duplicate_ids(source))
    train = ArrayData(np.asarray(images[tr]), labels[tr])
    val = ArrayData(np.asarray(images[va]), labels[va]) if len(va) else None
    net = backbone.build_network(len(source.classes))
    result = fit_network(
        net,
        train,
        val,
        config,
        out / "pretrain_run",
        pretrained_body=False,
        resume=resume,
        progress=progress,
        device=device,
    )
    metrics = {
        "source_dataset": source.name,
        "source_fingerprint": getattr(source, "fingerprint", None),
        "architecture": arch,
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "classes": list(source.classes),
        "source_val_acc": result.best_val_acc,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "precision": result.precision,
        "config": config.to_dict(),
        "history": result.history,
    }
    net = net.cpu().float()
    save_backbone_dir(
        net,
        None,
        None,
        out,
        name=name or f"{arch}-pretrained-{source.name}",
        source_classes=[str(c) for c in source.classes],
        source_dataset=source.name,
        extra={"pretrain": {k: metrics[k] for k in ("source_val_acc", "best_epoch", "epochs_run", "n_train")}},
    )
    atomic_write_json(out / "pretrain_metrics.json", metrics)
    return out
