"""Keras Applications VGG16 / VGG19, registered with timm as ``keras_vgg16`` / ``keras_vgg19``.

timm's ``vgg16`` differs: its fc layers are convolutions that run at any input size and it always
has them. Keras flattens the 7x7x512 ``block5_pool`` map channels-last before ``fc1``, so ``fc1``'s
rows are in (H, W, C) order; this twin flattens the same way. ``fc_layers=False`` is Keras's
``include_top=False, pooling='avg'``: the pooled features are the global average of ``block5_pool``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn

from .base import KerasNet
from .layers import FlattenNHWC, check_in_chans, keras_tag

WIDTHS = (64, 128, 256, 512, 512)
DEPTHS = {"keras_vgg16": (2, 2, 3, 3, 3), "keras_vgg19": (2, 2, 4, 4, 4)}
FC_WIDTH = 4096


def _block(b: int, n: int, c_in: int, c_out: int) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(1, n + 1):
        # padding="same" with a 3x3 kernel at stride 1 is symmetric: PyTorch's padding=1.
        layers[f"block{b}_conv{i}"] = keras_tag(nn.Conv2d(c_in if i == 1 else c_out, c_out, 3, padding=1),
                                                f"block{b}_conv{i}", "conv_bias")
        layers[f"block{b}_relu{i}"] = nn.ReLU()
    layers[f"block{b}_pool"] = nn.MaxPool2d(2, 2)
    return nn.Sequential(layers)


class KerasVGG(KerasNet):
    """Cut points: ``stem`` = block1 (after its pooling), ``stage1..4`` = block2..block5."""

    def __init__(self, depths: tuple[int, ...], num_classes: int = 1000, fc_layers: bool = False,
                 in_chans: int = 3, **kwargs: Any) -> None:
        check_in_chans(in_chans)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        blocks = [_block(b, n, 3 if b == 1 else WIDTHS[b - 2], WIDTHS[b - 1])
                  for b, n in enumerate(depths, start=1)]
        fc = None
        if fc_layers:
            fc = nn.Sequential(OrderedDict([
                # Exact identity on Keras's 7x7 map (224 input); lets other sizes run (Keras refuses them).
                ("fit7x7", nn.AdaptiveAvgPool2d(7)),
                ("flatten", FlattenNHWC()),
                ("fc1", keras_tag(nn.Linear(7 * 7 * WIDTHS[-1], FC_WIDTH), "fc1", "dense")),
                ("fc1_relu", nn.ReLU()),
                ("fc2", keras_tag(nn.Linear(FC_WIDTH, FC_WIDTH), "fc2", "dense")),
                ("fc2_relu", nn.ReLU()),
            ]))
        super().__init__(blocks[0], blocks[1:], WIDTHS, (2, 4, 8, 16, 32),
                         FC_WIDTH if fc_layers else WIDTHS[-1], num_classes)
        self.fc_layers = fc_layers
        self.fc = fc

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if self.fc is not None else x.mean(dim=(2, 3))


default_cfgs: dict[str, dict[str, Any]] = {
    name: {"num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 1.0,
           "interpolation": "bilinear",
           # Keras "caffe" preprocessing (x - ImageNet mean in 0..255, no scaling) in RGB order; the
           # importer reorders block1_conv1's input channels from Keras's BGR to RGB.
           "mean": (123.68 / 255, 116.779 / 255, 103.939 / 255), "std": (1 / 255, 1 / 255, 1 / 255),
           "first_conv": "stem.block1_conv1", "classifier": "classifier"}
    for name in DEPTHS
}


def keras_vgg16(pretrained: bool = False, **kwargs: Any) -> KerasVGG:
    """Keras Applications VGG16 (weights from a local file: ``transferkit import-keras``)."""
    from timm.models import build_model_with_cfg

    return build_model_with_cfg(KerasVGG, "keras_vgg16", False, depths=DEPTHS["keras_vgg16"], **kwargs)


def keras_vgg19(pretrained: bool = False, **kwargs: Any) -> KerasVGG:
    """Keras Applications VGG19 (weights from a local file: ``transferkit import-keras``)."""
    from timm.models import build_model_with_cfg

    return build_model_with_cfg(KerasVGG, "keras_vgg19", False, depths=DEPTHS["keras_vgg19"], **kwargs)


ENTRYPOINTS = (keras_vgg16, keras_vgg19)
