"""``save_backbone_dir``: a backbone transferkit made (``transferkit pretrain``), written as a card
plus safetensors weights so that ``load_backbone`` reads it again."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import ConfigError
from ..io import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from ._architectures import arch_family, timm_classifier_name
from ._backbone import Backbone, Preprocessing, TransferNet
from ._cards import CARD_FILENAME, CARD_FORMAT
from ._timm_extra import register_timm_extras
from ._torchvision import TORCHVISION_ARCHS
from ._weights import classifier_out_features

WEIGHTS_FILENAME = "weights.safetensors"
CLASSES_FILENAME = "source_classes.txt"


def save_backbone_dir(net_or_model: TransferNet | Backbone | nn.Module, arch: str | None,
                      preprocessing: Preprocessing | None, out_dir: str | os.PathLike[str], *,
                      model_kwargs: dict[str, Any] | None = None, name: str | None = None,
                      source_classes: Sequence[str] | None = None, source_dataset: str | None = None,
                      include_head: bool = True, extra: dict[str, Any] | None = None) -> Path:
    """Write ``backbone.json`` (a card) + ``weights.safetensors`` into ``out_dir``, atomically.

    ``net_or_model``: a TransferNet (its body; with ``include_head`` and a plain Linear head, that head
    is stored as the classifier so the folder has a source head), a Backbone, or a timm/torchvision
    network of ``arch``. ``arch`` / ``preprocessing`` may be None for a TransferNet or Backbone.
    Returns the card path; ``load_backbone(out_dir)`` rebuilds the network.
    """
    from safetensors.torch import save_file

    from .. import __version__

    register_timm_extras()
    out = Path(out_dir)
    if isinstance(net_or_model, Backbone):
        bb = net_or_model
        arch, preprocessing = arch or bb.arch, preprocessing or bb.preprocessing
        model_kwargs = bb.model_kwargs if model_kwargs is None else model_kwargs
        model, clf_name = bb.model, bb.classifier_name
        n_cls = bb.num_classes
        state = dict(model.state_dict())
        if source_classes is None and bb.source_classes is not None:
            source_classes = bb.source_classes
    elif isinstance(net_or_model, TransferNet):
        net = net_or_model
        arch, preprocessing = arch or net.arch, preprocessing or net.preprocessing
        model_kwargs = net.model_kwargs if model_kwargs is None else model_kwargs
        clf_name = net.classifier_name
        state = {k: v for k, v in net.body.state_dict().items()
                 if not (k == clf_name or k.startswith(clf_name + "."))}
        n_cls = 0
        if include_head and isinstance(net.head, nn.Linear):
            state[f"{clf_name}.weight"] = net.head.weight
            state[f"{clf_name}.bias"] = net.head.bias
            n_cls = net.head.out_features
    elif isinstance(net_or_model, nn.Module):
        if arch is None or preprocessing is None:
            raise ConfigError("save_backbone_dir needs arch and preprocessing for a plain nn.Module.")
        model = net_or_model
        family = arch_family(arch)
        clf_name = (TORCHVISION_ARCHS[arch].classifier if family == "torchvision"
                    else timm_classifier_name(model))
        state = dict(model.state_dict())
        n_cls = classifier_out_features(state, clf_name)
    else:
        raise ConfigError(f"save_backbone_dir expects a TransferNet, Backbone or nn.Module; got "
                          f"{type(net_or_model).__name__}.")
    assert arch is not None and preprocessing is not None
    arch_family(arch)
    if source_classes is not None and n_cls and len(source_classes) != n_cls:
        raise ConfigError(f"{len(source_classes)} source class names for a {n_cls}-class head.")

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    wpath = out / WEIGHTS_FILENAME
    with atomic_path(wpath, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "architecture": arch})
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "name": name or out.name,
        "architecture": arch,
        "model_kwargs": dict(model_kwargs or {}),
        "weights": WEIGHTS_FILENAME,
        "weights_sha256": sha256_file(wpath),
        "num_classes": int(n_cls),
        **preprocessing.to_dict(),
        "source_dataset": source_dataset,
        "source_classes": None,
        "transferkit_version": __version__,
    }
    if source_classes is not None and n_cls:
        atomic_write_text(out / CLASSES_FILENAME, "\n".join(map(str, source_classes)) + "\n")
        card["source_classes"] = CLASSES_FILENAME
    for k, v in (extra or {}).items():
        card.setdefault(k, v)
    cpath = out / CARD_FILENAME
    atomic_write_json(cpath, card)  # written last: a folder with a card is complete
    return cpath
