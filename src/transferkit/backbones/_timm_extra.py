"""Architectures transferkit adds to timm's registry, explicitly.

timm builds models by name from its registry (``timm.create_model``). A few architectures that
real weights exist for are not registered under a name there; we add them here with timm's own
``register_model`` so they load like any other timm model (``load_backbone('mobilenetv1_075')``,
or a backbone card naming them). Registration is NOT an import side effect of this module:
``register_timm_extras()`` is called once, visibly, by ``transferkit.backbones.__init__``.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

# Pretrained configuration timm attaches to the model (``model.pretrained_cfg``). No hub or URL
# weights exist for this name: its weights come from a local file or a backbone card
# (e.g. Keras Applications' MobileNet alpha=0.75, which expects x/127.5 - 1 at 224, bilinear).
_MOBILENETV1_075_CFG: dict[str, Any] = {
    "num_classes": 1000,
    "input_size": (3, 224, 224),
    "pool_size": (7, 7),
    "crop_pct": 1.0,
    "interpolation": "bilinear",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "first_conv": "conv_stem",
    "classifier": "classifier",
}

# timm's register_model reads pretrained configs from ``default_cfgs`` in the entrypoint's module.
default_cfgs: dict[str, dict[str, Any]] = {"mobilenetv1_075": _MOBILENETV1_075_CFG}

_registered = False


def mobilenetv1_075(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MobileNet v1 at channel multiplier 0.75 (timm's MobileNetV1 generator)."""
    from timm.models.efficientnet import _gen_mobilenet_v1

    # Weights never come through timm's pretrained path for this name (it has none); the
    # backbone factory loads local files itself.
    return _gen_mobilenet_v1("mobilenetv1_075", 0.75, pretrained=False, **kwargs)


def register_timm_extras() -> None:
    """Register transferkit's extra architectures with timm (idempotent)."""
    global _registered
    if _registered:
        return
    import timm
    from timm.models import register_model

    if "mobilenetv1_075" not in timm.list_models("mobilenetv1_075"):
        register_model(mobilenetv1_075)
    # transferkit's own small CNN (``pretrain`` target): registered here too, so a folder made by
    # `transferkit pretrain` loads in a fresh process that never imported the pretrain module.
    from .smallcnn import register_smallcnn

    register_smallcnn()
    _registered = True


EXTRA_TIMM_MODELS: tuple[str, ...] = ("mobilenetv1_075", "tk_smallcnn")
