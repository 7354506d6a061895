"""``tk_smallcnn``: a small CNN for 32x32 inputs (MNIST 28x28 and scikit-learn's 8x8 digits upsampled).

The develop-model approach (``transferkit pretrain``) trains it from scratch on a data-rich source
task and saves a backbone folder that every command accepts as ``--backbone``.

Layout (timm conventions, so the backbone factory treats it like any timm model):
``stem`` conv3x3-BN-ReLU (32 ch) -> ``stages.0..2`` each (conv3x3-BN-ReLU) x 2 + 2x2 max-pool
(32, 64, 128 channels; 16x16, 8x8, 4x4) -> global average pool -> ``classifier`` (Linear).
``feature_info`` names the cut points (stem, stages.0, stages.1, stages.2); ``get_classifier`` /
``reset_classifier`` / ``forward_features`` / ``forward_head`` behave as in timm.

Registration is explicit: ``register_smallcnn()`` (idempotent) adds it to timm's registry with
timm's ``register_model``; nothing is registered on import.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ARCH = "tk_smallcnn"

default_cfgs: dict[str, dict[str, Any]] = {
    ARCH: {
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "first_conv": "stem.conv",
        "classifier": "classifier",
    }
}


class ConvBnAct(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)


class Stage(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = ConvBnAct(cin, cout)
        self.conv2 = ConvBnAct(cout, cout)
        self.pool = nn.MaxPool2d(2)


class SmallCNN(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: tuple[int, ...] = (32, 64, 128),
        stem_width: int = 32,
        drop_rate: float = 0.0,
        **_: Any,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.stem = ConvBnAct(in_chans, stem_width)
        stages, cin, reduction = [], stem_width, 1
        self.feature_info = [{"num_chs": stem_width, "reduction": 1, "module": "stem"}]
        for i, w in enumerate(widths):
            stages.append(Stage(cin, w))
            cin, reduction = w, reduction * 2
            self.feature_info.append({"num_chs": w, "reduction": reduction, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = cin
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(cin, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def tk_smallcnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """transferkit's small CNN for 32x32 digits (no hub weights: pretrain it with ``transferkit pretrain``)."""
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("cache_dir", None)
    model = SmallCNN(**kwargs)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(ARCH, allow_unregistered=True)
    if cfg is not None:
        model.pretrained_cfg = model.default_cfg = cfg.to_dict()
    return model


_registered = False


def register_smallcnn() -> None:
    """Register ``tk_smallcnn`` with timm (idempotent)."""
    global _registered
    if _registered:
        return
    import timm
    from timm.models import register_model

    if not timm.is_model(ARCH):
        register_model(tk_smallcnn)
    _registered = True
