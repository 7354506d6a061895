"""The two families of strategies, and the training settings the network strategies share.

A strategy module subclasses one of these bases: ``FeatureStoreStrategy`` (frozen network, a head
on stored features: ``_probe.py``) or ``NetworkStrategy`` (the network trained end to end:
``_network.py``). Their fitted-model code, and its imports (the engine, scikit-learn), loads only
when a strategy is fitted or loaded, so reading the registry's declarations stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .base import FittedModel, Strategy

if TYPE_CHECKING:
    from ..backbones import Backbone


# The training settings the network strategies share (the engine's TrainConfig fields); each
# strategy's module overrides what makes it that strategy. "auto" values are resolved from the
# training data when the strategy fits (``_recipe``: one epoch of warm-up, at most a fifth of the
# run; class-weighted loss and balanced-accuracy selection for imbalanced classes; BatchNorm
# statistics kept or re-estimated on the target from their measured divergence).
NETWORK_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 32,
    "optimizer": "adamw",
    "lr": 1e-3,
    "body_lr_ratio": 0.1,
    "weight_decay": 0.01,
    "warmup_epochs": "auto",
    "label_smoothing": 0.0,
    "augment": True,
    "flip": True,
    "crop_scale": 0.5,
    "grad_accum": 1,
    "early_stopping_patience": None,
    "bn_policy": "auto",
    "class_weight": "auto",
    "hidden": (),
    "dropout": 0.0,
    "num_workers": 0,
}


class FeatureStoreStrategy(Strategy):
    """Base of the strategies that keep the network frozen and train on the feature store."""

    uses_feature_store: ClassVar[bool] = True

    @classmethod
    def load(cls, directory: Path, backbone: Backbone) -> FittedModel:
        from ._probe import FeatureModel

        return FeatureModel.load(directory, backbone)


class NetworkStrategy(Strategy):
    """Base of the strategies that train (part of) the network end to end on decoded images."""

    uses_feature_store: ClassVar[bool] = False

    @classmethod
    def load(cls, directory: Path, backbone: Backbone) -> FittedModel:
        from ._network import NetworkModel

        return NetworkModel.load(directory, backbone)
