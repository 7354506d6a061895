"""Keras Applications ResNet50, registered with timm as ``keras_resnet50``.

Keras's ResNet50 is ResNet v1, not the v1.5 of timm's / torchvision's ``resnet50``: a block that
downsamples does it in its first 1x1 convolution (``_1_conv``, stride 2), not in the 3x3 one.
Every convolution has a bias, and BatchNorm's epsilon is 1.001e-5 (PyTorch's default is 1e-5).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn

from .base import KerasNet
from .layers import check_in_chans, keras_tag

BN_EPS = 1.001e-5
# (Keras stack name, bottleneck width, blocks, stride of the first block)
STACKS = (("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2))


def _bn(c: int, name: str) -> nn.Module:
    # Keras momentum 0.99 is PyTorch momentum 0.01 (only matters when fine-tuning).
    return keras_tag(nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01), name, "bn")


class BottleneckV1(nn.Module):
    """Keras ``residual_block_v1``: [1x1 stride s] -> 3x3 -> 1x1 (x4), plus a projection shortcut
    (1x1 stride s) in the first block of each stack."""

    def __init__(self, name: str, c_in: int, width: int, stride: int, project: bool) -> None:
        super().__init__()
        c_out = 4 * width
        self.shortcut = None
        if project:
            self.shortcut = nn.Sequential(
                keras_tag(nn.Conv2d(c_in, c_out, 1, stride), f"{name}_0_conv", "conv_bias"), _bn(c_out, f"{name}_0_bn"))
        self.conv1 = keras_tag(nn.Conv2d(c_in, width, 1, stride), f"{name}_1_conv", "conv_bias")
        self.bn1 = _bn(width, f"{name}_1_bn")
        # padding="SAME", 3x3, stride 1: symmetric, PyTorch's padding=1.
        self.conv2 = keras_tag(nn.Conv2d(width, width, 3, padding=1), f"{name}_2_conv", "conv_bias")
        self.bn2 = _bn(width, f"{name}_2_bn")
        self.conv3 = keras_tag(nn.Conv2d(width, c_out, 1), f"{name}_3_conv", "conv_bias")
        self.bn3 = _bn(c_out, f"{name}_3_bn")
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(shortcut + self.bn3(self.conv3(y)))


class KerasResNet50(KerasNet):
    """Cut points: ``stem`` = conv1 (7x7 stride 2, BN, ReLU), ``stage1..4`` = Keras's conv2..conv5
    stacks (stage1 starts with pool1)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> None:
        check_in_chans(in_chans)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        stem = nn.Sequential(OrderedDict([
            # ZeroPadding2D(3) then a valid 7x7 stride-2 convolution: PyTorch's padding=3.
            ("conv1_conv", keras_tag(nn.Conv2d(3, 64, 7, 2, padding=3), "conv1_conv", "conv_bias")),
            ("conv1_bn", _bn(64, "conv1_bn")),
            ("conv1_relu", nn.ReLU()),
        ]))
        stages, c_in = [], 64
        for name, width, blocks, stride in STACKS:
            layers: OrderedDict[str, nn.Module] = OrderedDict()
            if name == "conv2":
                # ZeroPadding2D(1) then max pooling: zeros, not -inf, pad Keras's map, but it follows a
                # ReLU (values >= 0), so every window's maximum is the same as PyTorch's padding=1.
                layers["pool1"] = nn.MaxPool2d(3, 2, padding=1)
            for i in range(1, blocks + 1):
                layers[f"{name}_block{i}"] = BottleneckV1(f"{name}_block{i}", c_in, width,
                                                          stride if i == 1 else 1, project=i == 1)
                c_in = 4 * width
            stages.append(nn.Sequential(layers))
        super().__init__(stem, stages, (64, 256, 512, 1024, 2048), (2, 4, 8, 16, 32), 2048, num_classes)


default_cfgs: dict[str, dict[str, Any]] = {
    "keras_resnet50": {
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 1.0,
        "interpolation": "bilinear",
        # Keras "caffe" preprocessing in RGB order (the importer reorders conv1_conv's input channels).
        "mean": (123.68 / 255, 116.779 / 255, 103.939 / 255), "std": (1 / 255, 1 / 255, 1 / 255),
        "first_conv": "stem.conv1_conv", "classifier": "classifier"},
}


def keras_resnet50(pretrained: bool = False, **kwargs: Any) -> KerasResNet50:
    """Keras Applications ResNet50, v1 (weights from a local file: ``transferkit import-keras``)."""
    from timm.models import build_model_with_cfg

    return build_model_with_cfg(KerasResNet50, "keras_resnet50", False, **kwargs)


ENTRYPOINTS = (keras_resnet50,)
