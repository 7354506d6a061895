"""PyTorch building blocks that compute exactly what a Keras layer computes, and the tag that says
which Keras layer (name and kind) each PyTorch module takes its weights from.

The tags are what ``convert.layout_of`` reads: a network written with them needs no separate,
hand-kept table of Keras names, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

# What a Keras layer holds, in the order Keras stores its variables (Keras 3 ``.weights.h5`` files
# keep only that order, legacy files also the names). ``convert`` maps each kind to PyTorch.
KERAS_KINDS: dict[str, tuple[str, ...]] = {
    "conv": ("kernel",),
    "conv_bias": ("kernel", "bias"),
    "depthwise": ("kernel",),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "bn_noscale": ("beta", "moving_mean", "moving_variance"),  # BatchNormalization(scale=False)
    "dense": ("kernel", "bias"),
    "conv1x1_dense": ("kernel", "bias"),  # a 1x1 Conv2D on a 1x1 map used as the classifier
}


def keras_tag(module: nn.Module, keras_name: str, kind: str) -> nn.Module:
    """Mark ``module`` as the PyTorch twin of Keras layer ``keras_name`` (a ``KERAS_KINDS`` kind)."""
    if kind not in KERAS_KINDS:
        raise ValueError(f"unknown Keras layer kind {kind!r}")
    module.keras_name = keras_name
    module.keras_kind = kind
    return module


class BatchNormNoScale(nn.BatchNorm2d):
    """Keras ``BatchNormalization(scale=False)``: a shift but no learnt scale (gamma is 1, always).

    gamma is a constant, non-persistent buffer: it is not trained and not stored, as in Keras.
    """

    def __init__(self, num_features: int, eps: float = 1e-3) -> None:
        super().__init__(num_features, eps=eps, momentum=0.01)
        del self.weight
        self.register_buffer("weight", torch.ones(num_features), persistent=False)


class FlattenNHWC(nn.Module):
    """Keras ``Flatten`` on a channels-last map: (B, C, H, W) -> (B, H*W*C) in H, W, C order, so a
    Keras ``Dense`` kernel that follows it keeps its row order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)


class AvgPoolSame(nn.Module):
    """Keras ``AveragePooling2D(k, strides=1, padding='same')``: padded cells are not counted (TF);
    PyTorch's default ``count_include_pad=True`` would shrink every border average."""

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel_size, stride=1, padding=self.kernel_size // 2,
                            count_include_pad=False)


def check_in_chans(in_chans: Any) -> None:
    if in_chans != 3:
        raise ValueError(f"Keras Applications networks take 3-channel images; got in_chans={in_chans!r}")
