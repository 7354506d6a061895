"""Architectures transferkit adds to timm's registry, explicitly.

timm builds models by name from its registry (``timm.create_model``). A few architectures that
real weights exist for are not registered under a name there (MobileNets at Keras's widths), or
differ from the network the weights were trained in (Keras's VGG, ResNet50 v1, InceptionV3:
``backbones/keras``); we add them here with timm's own
``register_model`` so they load like any other timm model (``load_backbone('mobilenetv1_075')``,
or a backbone card naming them). Registration is NOT an import side effect of this module:
``register_timm_extras()`` is called once, visibly, by ``transferkit.backbones.__init__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

# Pretrained configuration timm attaches to the model (``model.pretrained_cfg``). No hub or URL
# weights exist for these names: their weights come from a local file or a backbone card
# (e.g. Keras Applications' MobileNets, which expect x/127.5 - 1 at 224, bilinear).
_KERAS_MOBILENET_CFG: dict[str, Any] = {
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

# MobileNet widths Keras Applications has weights for and timm registers no model of.
# v1: timm's MobileNetV1 generator at that channel multiplier (Keras's alpha);
# v2: timm's MobileNetV2 generator (timm registers 0.35, 0.5, 0.75, 1.0 and 1.4 itself).
MOBILENET_V1_EXTRA = {"mobilenetv1_025": 0.25, "mobilenetv1_050": 0.5, "mobilenetv1_075": 0.75}
MOBILENET_V2_EXTRA = {"mobilenetv2_130": 1.3}

# timm's register_model reads pretrained configs from ``default_cfgs`` in the entrypoint's module.
default_cfgs: dict[str, dict[str, Any]] = {
    name: _KERAS_MOBILENET_CFG for name in (*MOBILENET_V1_EXTRA, *MOBILENET_V2_EXTRA)}

_registered = False


def _mobilenet_entrypoint(name: str, multiplier: float, version: int) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        from timm.models.efficientnet import _gen_mobilenet_v1, _gen_mobilenet_v2

        gen = _gen_mobilenet_v1 if version == 1 else _gen_mobilenet_v2
        # Weights never come through timm's pretrained path for these names (they have none); the
        # backbone factory loads local files itself.
        return gen(name, multiplier, pretrained=False, **kwargs)

    # timm registers an entrypoint under its function name, in its module's default_cfgs.
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = f"MobileNet v{version} at channel multiplier {multiplier} (timm's generator)."
    return entrypoint


def register_timm_extras() -> None:
    """Register transferkit's extra architectures with timm (idempotent)."""
    global _registered
    if _registered:
        return
    import timm
    from timm.models import register_model

    for version, table in ((1, MOBILENET_V1_EXTRA), (2, MOBILENET_V2_EXTRA)):
        for name, multiplier in table.items():
            if name not in timm.list_models(name):
                register_model(_mobilenet_entrypoint(name, multiplier, version))
    # Keras Applications' VGG16/19, ResNet50 (v1) and InceptionV3, which timm's own models differ from.
    from .keras.registry import register_keras_models

    register_keras_models()
    # transferkit's own small CNN (``pretrain`` target): registered here too, so a folder made by
    # `transferkit pretrain` loads in a fresh process that never imported the pretrain module.
    from .smallcnn import register_smallcnn

    register_smallcnn()
    _registered = True


EXTRA_TIMM_MODELS: tuple[str, ...] = (*MOBILENET_V1_EXTRA, *MOBILENET_V2_EXTRA, "keras_vgg16", "keras_vgg19",
                                      "keras_resnet50", "keras_inception_v3", "tk_smallcnn")
