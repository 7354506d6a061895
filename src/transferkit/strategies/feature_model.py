"""The fitted model shared by every strategy that trains on frozen features.

``linear``, ``intermediate`` and ``hidden`` all freeze the backbone, cut it at one named
layer, pool, standardise and put a small head on top; they differ only in the layer and
the head. One class serves all three so that prediction, saving and export stay identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import StoreError
from ..io import atomic_path, atomic_write_json
from .base import MODEL_CONFIG, MODEL_WEIGHTS, FittedModel, read_model_files

if TYPE_CHECKING:
    from ..backbones import Backbone

CONFIG_NAME = MODEL_CONFIG
WEIGHTS_NAME = MODEL_WEIGHTS


def build_head(in_features: int, num_classes: int, hidden: tuple[int, ...] = (), dropout: float = 0.0) -> nn.Module:
    """A Linear layer, or an MLP (Linear-ReLU-Dropout per hidden width, then Linear)."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


class FeatureHeadNet(nn.Module):
    """Image (float 0..255, B x 3 x H x W) -> logits: frozen backbone at ``layer``, pool, scale, head.

    Used for prediction and for ONNX / TorchScript export of feature-based strategies.
    """

    def __init__(self, backbone: Backbone, layer: str, pool: str | int, mean: torch.Tensor,
                 scale: torch.Tensor, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.body = backbone.model  # registered so .to(device) and export see the weights
        self.layer = layer
        self.pool = pool
        self.register_buffer("feat_mean", mean.float())
        self.register_buffer("feat_scale", scale.float())
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_layers(x, [self.layer], pool=self.pool)[self.layer].float()
        return self.head((feats - self.feat_mean) / self.feat_scale)


class FeatureModel(FittedModel):
    """A frozen backbone cut at ``layer`` plus a trained head on its standardised, pooled output."""

    def __init__(self, *, backbone: Backbone, strategy: str, layer: str, pool: str | int,
                 classes: list[str], mean: np.ndarray, scale: np.ndarray, head: nn.Module,
                 head_config: dict[str, Any], precision: str = "fp32", info: dict[str, Any] | None = None):
        self.backbone = backbone
        self.strategy = strategy
        self.layer = layer
        self.pool = pool
        self.classes = list(classes)
        self.head_config = dict(head_config)
        self.precision = precision
        self.info = dict(info or {})
        self.net = FeatureHeadNet(backbone, layer, pool, torch.as_tensor(mean), torch.as_tensor(scale), head).eval()

    # -- prediction -------------------------------------------------------------------------
    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        from ..features import compute_features

        feats = compute_features(self.backbone, images, [self.layer], pool=self.pool,
                                 batch_size=batch_size, precision=self.precision)[self.layer]
        return self.proba_from_features(feats)

    def proba_from_features(self, feats: np.ndarray) -> np.ndarray:
        """Probabilities from already extracted (unstandardised) features of ``layer``."""
        with torch.inference_mode():
            z = (torch.as_tensor(feats, dtype=torch.float32) - self.net.feat_mean) / self.net.feat_scale
            return torch.softmax(self.net.head(z), dim=1).numpy()

    def to_module(self) -> nn.Module:
        return self.net

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        tensors = {"feat_mean": self.net.feat_mean, "feat_scale": self.net.feat_scale}
        tensors.update({f"head.{k}": v.contiguous() for k, v in self.net.head.state_dict().items()})
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        atomic_write_json(directory / CONFIG_NAME, {
            "kind": "feature_model",
            "strategy": self.strategy,
            "layer": self.layer,
            "pool": self.pool,
            "classes": self.classes,
            "head": self.head_config,
            "precision": self.precision,
            "backbone_weights_hash": self.backbone.weights_hash,
            "info": self.info,
        })

    @classmethod
    def load(cls, directory: Path, backbone: Backbone) -> FeatureModel:
        directory = Path(directory)
        config, tensors = read_model_files(directory)
        if config.get("backbone_weights_hash") != backbone.weights_hash:
            raise StoreError(
                f"The model in {directory} was trained on backbone weights {config.get('backbone_weights_hash')!r} "
                f"but {backbone.spec!r} now has weights {backbone.weights_hash!r}. Point --backbone at the "
                "weights the run used."
            )
        head_cfg = config["head"]
        head = build_head(head_cfg["in_features"], len(config["classes"]), tuple(head_cfg.get("hidden", ())),
                          head_cfg.get("dropout", 0.0))
        head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
        return cls(backbone=backbone, strategy=config["strategy"], layer=config["layer"], pool=config["pool"],
                   classes=config["classes"], mean=tensors["feat_mean"].numpy(),
                   scale=tensors["feat_scale"].numpy(), head=head, head_config=head_cfg,
                   precision=config.get("precision", "fp32"), info=config.get("info"))


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale of the training features (scale 1 where a feature is constant)."""
    mean = x.mean(axis=0).astype(np.float32)
    scale = x.std(axis=0).astype(np.float32)
    scale[scale < 1e-6] = 1.0
    return mean, scale
