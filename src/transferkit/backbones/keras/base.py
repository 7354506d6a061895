"""``KerasNet``: the shape every Keras Applications twin transferkit registers with timm shares.

stem -> stage1..N -> pooled features (global average, or VGG's fc1/fc2) -> classifier. It answers
timm's model interface (``feature_info``, ``get_classifier``, ``reset_classifier``,
``num_features``, ``num_classes``), so the backbone factory cuts it at ``stem``, ``stage1..N``
and ``pool`` like any timm network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .layers import keras_tag


class KerasNet(nn.Module):
    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module], widths: Sequence[int],
                 reductions: Sequence[int], num_features: int, num_classes: int) -> None:
        super().__init__()
        self.stem = stem
        self.stage_names = [f"stage{i}" for i in range(1, len(stages) + 1)]
        for name, stage in zip(self.stage_names, stages, strict=True):
            self.add_module(name, stage)
        self.feature_info = [
            {"module": m, "num_chs": c, "reduction": r}
            for m, c, r in zip(["stem", *self.stage_names], widths, reductions, strict=True)
        ]
        self.num_features = num_features
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"Keras Applications networks pool by global average; got {global_pool!r}")
        self.num_classes = num_classes
        # Keras names the 1000-class layer "predictions" in every family here.
        self.classifier = (keras_tag(nn.Linear(self.num_features, num_classes), "predictions", "dense")
                           if num_classes else nn.Identity())

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # Keras GlobalAveragePooling2D

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
