"""Heads on stored features of one or several cut points: the shared code of ``head2toe``, ``adabn``, ``knn``.

A feature-store candidate is fitted in two steps that ``auto``'s cross-validation and the
strategy's own ``fit`` (``families.StoreHeadStrategy.fit_store_head``) share
(``FeatureStoreStrategy.candidate_features`` then ``fit_arrays``):
the features of every image at the candidate's cut points, then a head fitted on the rows of the
training fold. ``fit_arrays`` returns a ``FittedHead``: callable as ``predict_proba`` on feature
arrays, and holding the torch module (``head.module``: per-layer features -> logits) that
``StoreHeadModel`` puts behind the frozen backbone for prediction, saving and ONNX export.

A head module declares ``kind`` (its name in ``HEAD_KINDS``) and ``config()`` (JSON); its
tensors are its ``state_dict``, so ``StoreHeadModel.load`` rebuilds it without code execution.
A backbone whose BatchNorm statistics were re-estimated (``adabn``) is saved as those statistics
plus the identity of the adaptation, and rebuilt on load from the source backbone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import StoreError
from ..io import atomic_path, atomic_write_json
from .base import MODEL_CONFIG, MODEL_WEIGHTS, FittedModel, check_backbone_weights, read_model_files

if TYPE_CHECKING:
    from ..backbones import Backbone


# ------------------------------------------------------------------------------------ heads
class SelectedLinearHead(nn.Module):
    """Concatenate the layers' features, keep some columns, standardise them, one Linear layer.

    ``keep`` indexes the concatenation (all of it for a plain probe, Head2Toe's selection
    otherwise); ``mean``/``scale`` are those columns' (scale may fold in a per-layer weight).
    """

    kind = "selected_linear"

    def __init__(self, in_features: int, keep: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor,
                 linear: nn.Linear):
        super().__init__()
        self.in_features = int(in_features)
        self.register_buffer("keep", keep.long())
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale", scale.float())
        self.linear = linear

    def forward(self, *feats: torch.Tensor) -> torch.Tensor:
        x = torch.cat([f.float() for f in feats], dim=1) if len(feats) > 1 else feats[0].float()
        x = x.index_select(1, self.keep)
        return self.linear((x - self.mean) / self.scale)

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "kept": int(self.keep.numel()),
                "num_classes": int(self.linear.out_features)}

    @classmethod
    def empty(cls, config: dict[str, Any]) -> SelectedLinearHead:
        k = int(config["kept"])
        return cls(config["in_features"], torch.zeros(k, dtype=torch.long), torch.zeros(k), torch.ones(k),
                   nn.Linear(k, int(config["num_classes"])))


class KnnHead(nn.Module):
    """k-nearest-neighbour vote by cosine similarity to stored training features.

    Features are centred on the training mean and L2-normalised ("CL2N", Wang et al. 2019,
    SimpleShot: centring before normalising helps nearest-neighbour transfer). The probability of
    a class is its share of the k votes, plus a tie-break under 1e-3 from the voters' similarity
    (a vote is never outweighed by it); the logits are the log of those probabilities, so a
    softmax of the exported output gives them back.
    """

    kind = "knn"

    def __init__(self, mean: torch.Tensor, train: torch.Tensor, onehot: torch.Tensor, k: int):
        super().__init__()
        self.k = int(min(k, train.shape[0]))
        self.register_buffer("mean", mean.float())
        self.register_buffer("bank", train.float())
        self.register_buffer("onehot", onehot.float())

    def forward(self, *feats: torch.Tensor) -> torch.Tensor:
        z = feats[0].float() - self.mean
        z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sims, idx = torch.topk(z @ self.bank.T, self.k, dim=1)
        votes = knn_votes(self.onehot[idx], sims)
        proba = votes / votes.sum(1, keepdim=True)
        return torch.log(proba.clamp_min(1e-12))

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "n": int(self.bank.shape[0]), "dim": int(self.bank.shape[1]),
                "num_classes": int(self.onehot.shape[1])}

    @classmethod
    def empty(cls, config: dict[str, Any]) -> KnnHead:
        n, d, c = int(config["n"]), int(config["dim"]), int(config["num_classes"])
        return cls(torch.zeros(d), torch.zeros(n, d), torch.zeros(n, c), int(config["k"]))


def knn_votes(voters: torch.Tensor, sims: torch.Tensor) -> torch.Tensor:
    """(B, C) votes from the one-hot labels (B, k, C) of k neighbours and their similarities (B, k):
    one per neighbour, plus under 1e-3 from the voters' mean similarity to break ties."""
    return voters.sum(1) + 1e-3 * (voters * sims.unsqueeze(-1)).sum(1) / sims.shape[1]


HEAD_KINDS: dict[str, type[nn.Module]] = {SelectedLinearHead.kind: SelectedLinearHead, KnnHead.kind: KnnHead}


class FittedHead:
    """What ``fit_arrays`` returns: ``head(features) -> (n, C)`` probabilities, from ``layers`` of ``features``."""

    def __init__(self, layers: Sequence[str], module: nn.Module, info: dict[str, Any]):
        self.layers = list(layers)
        self.module = module.eval()
        self.info = info

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            feats = [torch.as_tensor(np.asarray(features[layer]), dtype=torch.float32) for layer in self.layers]
            return torch.softmax(self.module(*feats).float(), dim=1).numpy()


def linear_head(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int, *, mean: np.ndarray,
                scale: np.ndarray, keep: np.ndarray | None = None) -> tuple[SelectedLinearHead, dict[str, Any]]:
    """The linear probe (``_probe.fit_logistic``: L2 strength by CV) on ``x[:, keep]`` standardised
    with ``mean``/``scale`` (of the kept columns), as a ``SelectedLinearHead`` over all of ``x``'s columns."""
    from ._probe import fit_logistic

    keep = np.arange(x.shape[1]) if keep is None else np.asarray(keep, dtype=np.int64)
    linear, info = fit_logistic((x[:, keep] - mean) / scale, y, num_classes, seed)
    head = SelectedLinearHead(x.shape[1], torch.from_numpy(keep), torch.from_numpy(mean), torch.from_numpy(scale),
                              linear)
    return head, info


# ------------------------------------------------------------------------- adapted backbones
def is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats


def batchnorm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every BatchNorm's running statistics, keyed ``<module path>.running_mean`` / ``.running_var``."""
    out = {}
    for name, m in model.named_modules():
        if is_batchnorm(m):
            out[f"{name}.running_mean"] = m.running_mean.detach().cpu().clone()
            out[f"{name}.running_var"] = m.running_var.detach().cpu().clone()
    return out


def with_batchnorm_state(backbone: Backbone, state: dict[str, torch.Tensor], weights_hash: str) -> Backbone:
    """A copy of ``backbone`` whose BatchNorm statistics are ``state``; its ``weights_hash`` (and so
    every feature-store key of its features) is ``weights_hash``."""
    adapted = copy.deepcopy(backbone)  # one memo: the copy's cut points hook the copy's modules
    expected = set(batchnorm_state(adapted.model))
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise StoreError(
            f"The BatchNorm statistics do not fit backbone {getattr(backbone, 'name', '')!r}: missing "
            f"{missing[:5]}, unexpected {unexpected[:5]}. Point --backbone at the weights the run used."
        )
    modules = dict(adapted.model.named_modules())
    with torch.no_grad():
        for key, value in state.items():
            name, attr = key.rsplit(".", 1)
            getattr(modules[name], attr).copy_(value)
    adapted.weights_hash = weights_hash
    return adapted


# ----------------------------------------------------------------------------- fitted model
class ImageHeadNet(nn.Module):
    """Image (float 0..255, B x 3 x H x W) -> logits: frozen backbone, pooled ``layers``, head (export)."""

    def __init__(self, backbone: Backbone, layers: Sequence[str], pool: str | int, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.body = backbone.model  # registered so .to(device) and export see the weights
        self.layers = list(layers)
        self.pool = pool
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone.forward_layers(x, self.layers, pool=self.pool)
        return self.head(*[out[layer].float() for layer in self.layers])


class StoreHeadModel(FittedModel):
    """A frozen backbone (possibly with re-estimated BatchNorm statistics) plus a head on pooled features
    of one or several cut points."""

    def __init__(self, *, backbone: Backbone, strategy: str, head: FittedHead, pool: str | int,
                 classes: list[str], precision: str, info: dict[str, Any] | None = None,
                 adaptation: dict[str, Any] | None = None, feature_backbone: Backbone | None = None):
        self.backbone = backbone
        self.strategy = strategy
        self.head = head
        self.layers = head.layers
        self.pool = pool
        self.classes = list(classes)
        self.precision = precision
        self.info = dict(info or {})
        # adaptation: {"weights_hash": ..., "identity": {...}} of the BatchNorm statistics in feature_backbone.
        self.adaptation = adaptation
        self.feature_backbone = feature_backbone or backbone
        self.net = ImageHeadNet(self.feature_backbone, self.layers, pool, head.module).eval()

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        from ..features import compute_features

        feats = compute_features(self.feature_backbone, images, self.layers, pool=self.pool, batch_size=batch_size,
                                 precision=self.precision)
        return self.head(feats)

    def to_module(self) -> nn.Module:
        return self.net

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        tensors = {f"head.{k}": v for k, v in self.head.module.state_dict().items()}
        if self.adaptation is not None:
            tensors.update({f"bn.{k}": v for k, v in batchnorm_state(self.feature_backbone.model).items()})
        with atomic_path(directory / MODEL_WEIGHTS) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        atomic_write_json(directory / MODEL_CONFIG, {
            "kind": "store_head_model",
            "strategy": self.strategy,
            "layers": self.layers,
            "pool": self.pool,
            "classes": self.classes,
            "head": {"kind": self.head.module.kind, **self.head.module.config()},
            "precision": self.precision,
            "backbone_weights_hash": self.backbone.weights_hash,
            "adaptation": self.adaptation,
            "info": self.info,
        })

    @classmethod
    def load(cls, directory: Path, backbone: Backbone) -> StoreHeadModel:
        directory = Path(directory)
        config, tensors = read_model_files(directory)
        check_backbone_weights(config, backbone, directory)
        head_cfg = dict(config["head"])
        kind = head_cfg.pop("kind", None)
        if kind not in HEAD_KINDS:
            raise StoreError(f"The model in {directory} has a head of kind {kind!r}; this transferkit knows "
                             f"{sorted(HEAD_KINDS)}. Use the transferkit version that wrote it.")
        module = HEAD_KINDS[kind].empty(head_cfg)
        module.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
        adaptation = config.get("adaptation")
        feature_backbone = None
        if adaptation is not None:
            state = {k[len("bn."):]: v for k, v in tensors.items() if k.startswith("bn.")}
            feature_backbone = with_batchnorm_state(backbone, state, adaptation["weights_hash"])
        head = FittedHead(config["layers"], module, {})
        return cls(backbone=backbone, strategy=config["strategy"], head=head, pool=config["pool"],
                   classes=config["classes"], precision=config.get("precision", "fp32"), info=config.get("info"),
                   adaptation=adaptation, feature_backbone=feature_backbone)
