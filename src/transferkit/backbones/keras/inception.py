"""Keras Applications InceptionV3, registered with timm as ``keras_inception_v3``.

Differs from timm's / torchvision's ``inception_v3`` in two ways that change the features silently:
Keras's BatchNorm has no scale (``scale=False``: gamma is 1), and its branch average pooling
(3x3, stride 1, padding "same") does not count the padded cells (PyTorch's default does).

Keras names these layers automatically (``conv2d``, ``conv2d_1``, ... ``batch_normalization_93``,
numbered in construction order; a file may start at another number). This network is built in
Keras's construction order and each layer takes the canonical name of its place; the importer
renumbers a file's names the same way (``canonical_names``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from .base import KerasNet
from .layers import AvgPoolSame, BatchNormNoScale, check_in_chans, keras_tag

AUTO_NAMED = ("conv2d", "batch_normalization")


class _Namer:
    """Hands out Keras's automatic names in construction order."""

    def __init__(self) -> None:
        self.count = 0

    def next(self) -> tuple[str, str]:
        suffix = f"_{self.count}" if self.count else ""
        self.count += 1
        return f"conv2d{suffix}", f"batch_normalization{suffix}"


class ConvBN(nn.Module):
    """Keras ``conv2d_bn``: convolution without bias, BatchNorm without scale (eps 1e-3), ReLU."""

    def __init__(self, namer: _Namer, c_in: int, c_out: int, kernel: int | tuple[int, int],
                 stride: int = 1, padding: str = "same") -> None:
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        # "same" only ever meets stride 1 and odd kernels here: symmetric padding, as in PyTorch.
        pad = (kh // 2, kw // 2) if padding == "same" else 0
        conv_name, bn_name = namer.next()
        self.conv = keras_tag(nn.Conv2d(c_in, c_out, (kh, kw), stride, pad, bias=False), conv_name, "conv")
        self.bn = keras_tag(BatchNormNoScale(c_out, eps=1e-3), bn_name, "bn_noscale")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class _Mixed(nn.Module):
    """Branches run on the same input and concatenate in Keras's order (each a Sequential)."""

    def __init__(self, branches: Iterable[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class _Split(nn.Module):
    """mixed9/mixed10's 1x3 and 3x1 convolutions on one input, concatenated."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], dim=1)


def _seq(*mods: nn.Module) -> nn.Sequential:
    return nn.Sequential(*mods)


# Each builder creates its layers in exactly the order keras/applications/inception_v3.py does.
def _mixed_a(n: _Namer, c_in: int, pool_ch: int) -> _Mixed:  # mixed0..2
    b1 = ConvBN(n, c_in, 64, 1)
    b5 = _seq(ConvBN(n, c_in, 48, 1), ConvBN(n, 48, 64, 5))
    b3 = _seq(ConvBN(n, c_in, 64, 1), ConvBN(n, 64, 96, 3), ConvBN(n, 96, 96, 3))
    return _Mixed([b1, b5, b3, _seq(AvgPoolSame(3), ConvBN(n, c_in, pool_ch, 1))])


def _mixed_b(n: _Namer, c_in: int) -> _Mixed:  # mixed3
    b3 = ConvBN(n, c_in, 384, 3, 2, "valid")
    b3d = _seq(ConvBN(n, c_in, 64, 1), ConvBN(n, 64, 96, 3), ConvBN(n, 96, 96, 3, 2, "valid"))
    return _Mixed([b3, b3d, nn.MaxPool2d(3, 2)])


def _mixed_c(n: _Namer, c7: int) -> _Mixed:  # mixed4..7
    b1 = ConvBN(n, 768, 192, 1)
    b7 = _seq(ConvBN(n, 768, c7, 1), ConvBN(n, c7, c7, (1, 7)), ConvBN(n, c7, 192, (7, 1)))
    b7d = _seq(ConvBN(n, 768, c7, 1), ConvBN(n, c7, c7, (7, 1)), ConvBN(n, c7, c7, (1, 7)),
               ConvBN(n, c7, c7, (7, 1)), ConvBN(n, c7, 192, (1, 7)))
    return _Mixed([b1, b7, b7d, _seq(AvgPoolSame(3), ConvBN(n, 768, 192, 1))])


def _mixed_d(n: _Namer) -> _Mixed:  # mixed8
    b3 = _seq(ConvBN(n, 768, 192, 1), ConvBN(n, 192, 320, 3, 2, "valid"))
    b7 = _seq(ConvBN(n, 768, 192, 1), ConvBN(n, 192, 192, (1, 7)), ConvBN(n, 192, 192, (7, 1)),
              ConvBN(n, 192, 192, 3, 2, "valid"))
    return _Mixed([b3, b7, nn.MaxPool2d(3, 2)])


def _mixed_e(n: _Namer, c_in: int) -> _Mixed:  # mixed9, mixed10
    b1 = ConvBN(n, c_in, 320, 1)
    b3 = _seq(ConvBN(n, c_in, 384, 1), _Split(ConvBN(n, 384, 384, (1, 3)), ConvBN(n, 384, 384, (3, 1))))
    b3d = _seq(ConvBN(n, c_in, 448, 1), ConvBN(n, 448, 384, 3),
               _Split(ConvBN(n, 384, 384, (1, 3)), ConvBN(n, 384, 384, (3, 1))))
    return _Mixed([b1, b3, b3d, _seq(AvgPoolSame(3), ConvBN(n, c_in, 192, 1))])


class KerasInceptionV3(KerasNet):
    """Cut points: ``stem`` (3 convolutions, 64 ch), ``stage1`` (pool, 80 and 192 ch convolutions),
    ``stage2`` = mixed0..2, ``stage3`` = mixed3..7 (Keras's ``mixed7``), ``stage4`` = mixed8..10."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, **kwargs: Any) -> None:
        check_in_chans(in_chans)
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        n = _Namer()
        stem = _seq(ConvBN(n, 3, 32, 3, 2, "valid"), ConvBN(n, 32, 32, 3, 1, "valid"), ConvBN(n, 32, 64, 3))
        stage1 = _seq(nn.MaxPool2d(3, 2), ConvBN(n, 64, 80, 1, 1, "valid"), ConvBN(n, 80, 192, 3, 1, "valid"))
        stage2 = nn.Sequential(OrderedDict([("pool", nn.MaxPool2d(3, 2)), ("mixed0", _mixed_a(n, 192, 32)),
                                            ("mixed1", _mixed_a(n, 256, 64)), ("mixed2", _mixed_a(n, 288, 64))]))
        stage3 = nn.Sequential(OrderedDict([("mixed3", _mixed_b(n, 288)), ("mixed4", _mixed_c(n, 128)),
                                            ("mixed5", _mixed_c(n, 160)), ("mixed6", _mixed_c(n, 160)),
                                            ("mixed7", _mixed_c(n, 192))]))
        stage4 = nn.Sequential(OrderedDict([("mixed8", _mixed_d(n)), ("mixed9", _mixed_e(n, 1280)),
                                            ("mixed10", _mixed_e(n, 2048))]))
        super().__init__(stem, [stage1, stage2, stage3, stage4], (64, 192, 288, 768, 2048),
                         (2, 4, 8, 16, 32), 2048, num_classes)


def canonical_names(names: Iterable[str]) -> dict[str, str]:
    """File layer name -> the name Keras gives that layer in a fresh session (``conv2d_7`` ...).

    Automatic names are numbered in construction order but may start anywhere (Keras 2 files start
    at ``conv2d_1``; a model built after another continues the count), so each family is renumbered
    by its order. Other names (``predictions``) are kept.
    """
    out: dict[str, str] = {}
    for base in AUTO_NAMED:
        pattern = re.compile(rf"^{base}(?:_(\d+))?$")
        found = sorted((int(m.group(1) or 0), name) for name in names if (m := pattern.match(name)))
        for i, (_, name) in enumerate(found):
            out[name] = f"{base}_{i}" if i else base
    return {name: out.get(name, name) for name in names}


default_cfgs: dict[str, dict[str, Any]] = {
    "keras_inception_v3": {
        "num_classes": 1000, "input_size": (3, 299, 299), "pool_size": (8, 8), "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),  # Keras "tf": x/127.5 - 1
        "first_conv": "stem.0.conv", "classifier": "classifier"},
}


def keras_inception_v3(pretrained: bool = False, **kwargs: Any) -> KerasInceptionV3:
    """Keras Applications InceptionV3 (weights from a local file: ``transferkit import-keras``)."""
    from timm.models import build_model_with_cfg

    return build_model_with_cfg(KerasInceptionV3, "keras_inception_v3", False, **kwargs)


ENTRYPOINTS = (keras_inception_v3,)
