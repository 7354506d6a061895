"""What an architecture name means and how to build it: timm or torchvision, cut modules, preprocessing."""

from __future__ import annotations

import difflib
from typing import Any

import torch
import torch.nn as nn

from ..errors import BackboneError
from ._backbone import Preprocessing
from ._cards import Card
from ._torchvision import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_ARCHS


def known_arch_names() -> list[str]:
    import timm

    return sorted(set(timm.list_models()) | set(TORCHVISION_ARCHS))


def arch_family(arch: str) -> str:
    """Return the family ("timm" | "torchvision") of ``arch``; BackboneError with close matches if unknown."""
    import timm

    if arch in TORCHVISION_ARCHS:
        return "torchvision"
    if timm.is_model(arch):
        return "timm"
    close = difflib.get_close_matches(arch, known_arch_names(), n=6, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise BackboneError(
        f"Unknown architecture {arch!r}: not a timm model name nor one of transferkit's torchvision "
        f"wrappers ({', '.join(sorted(TORCHVISION_ARCHS))}).{hint} List them with "
        "`timm.list_models()` / `transferkit backbones`."
    )


def timm_classifier_name(model: nn.Module) -> str:
    clf = model.get_classifier()
    for name, mod in model.named_modules():
        if mod is clf:
            return name
    raise BackboneError(f"Cannot locate the classifier module of {type(model).__name__}.")


def timm_default_classifier(arch: str) -> str | None:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch, allow_unregistered=True)
    clf = getattr(cfg, "classifier", None) if cfg is not None else None
    return clf if isinstance(clf, str) else None


def timm_cut_modules(model: nn.Module) -> tuple[str, list[str]]:
    """(stem module, stage modules) of a timm model from its feature_info.

    stem: the ``stem`` module when the model has one (ConvNeXt, RegNet, ...); ``bn1`` after
    ``conv_stem`` in the EfficientNet / MobileNet family; otherwise the first feature_info entry
    (ResNet ``act1``, VGG ``features.3``, Inception ``Conv2d_2b_3x3``), which is the stem output.
    stages: the (remaining) feature_info entries.
    """
    info = getattr(model, "feature_info", None)
    entries = [d["module"] for d in info] if isinstance(info, list) else []
    if not entries:
        raise BackboneError(
            f"timm model {type(model).__name__} has no feature_info; cannot name its cut points.")
    children = dict(model.named_children())
    if "stem" in children:
        stem = "stem"
    elif "conv_stem" in children and "bn1" in children:
        stem = "bn1"
    else:
        stem = entries[0]
    stages = [m for m in entries if m != stem]
    return stem, stages


def build_model(family: str, arch: str, num_classes: int, kwargs: dict[str, Any], seed: int,
           where: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            if family == "torchvision":
                return TORCHVISION_ARCHS[arch].build(num_classes, **kwargs)
            import timm

            return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
        except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as exc:
            raise BackboneError(f"Cannot build {arch!r} with model_kwargs {kwargs} ({where}): {exc}") from exc


def timm_preprocessing(model: nn.Module) -> Preprocessing:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return Preprocessing(tuple(int(v) for v in cfg["input_size"]), tuple(float(v) for v in cfg["mean"]),
                         tuple(float(v) for v in cfg["std"]), str(cfg.get("interpolation", "bilinear")))


def default_preprocessing(family: str, model: nn.Module) -> Preprocessing:
    if family == "timm":
        return timm_preprocessing(model)
    return Preprocessing((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, "bilinear")


def card_preprocessing(card: Card, default: Preprocessing) -> Preprocessing:
    return Preprocessing(
        input_size=card.input_size or default.input_size,
        mean=card.mean or default.mean,
        std=card.std or default.std,
        interpolation=card.interpolation or default.interpolation,
    )
