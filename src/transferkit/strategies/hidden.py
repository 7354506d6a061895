"""``hidden`` — hidden fully connected layers on a frozen network.

The whole network is frozen; new hidden layers and an output layer are trained on the stored
pooled features (``_mlp.train_mlp_head``), so it costs one forward pass over the data. A
nonlinear head helps when the classes cluster in the CNN codes without being linearly separable.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..errors import ConfigError
from .base import FitContext, FittedModel
from .families import FeatureStoreStrategy


class HiddenStrategy(FeatureStoreStrategy):
    name: ClassVar[str] = "hidden"
    description: ClassVar[str] = (
        "Whole network frozen; new hidden fully connected layers and output trained on the stored pooled features."
    )
    case: ClassVar[str] = "small, classes not linearly separable in the codes"
    complexity: ClassVar[int] = 3
    compared_by_default: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {"hidden": (512,), "dropout": 0.5, "epochs": 100, "lr": 1e-3}

    @classmethod
    def cv_candidates(cls, backbone: Any) -> list[dict[str, Any]]:
        """None: its fit stops early on the selection split, which a cross-validation fold lacks, so a
        cross-validated score would not be the score of what ``fit`` trains (and it rarely beats linear)."""
        return []

    def fit(self, ctx: FitContext) -> FittedModel:
        from ._probe import fit_feature_model

        hidden = tuple(int(h) for h in (ctx.params.get("hidden") or self.defaults["hidden"]))
        if not hidden:
            raise ConfigError(
                "The 'hidden' parameter of strategy 'hidden' must name at least one layer width, "
                "e.g. (512,). For no hidden layer use strategy 'linear'."
            )
        return fit_feature_model(self.name, ctx, layer="pool", pool="avg", hidden=hidden,
                                 dropout=float(ctx.params.get("dropout", self.defaults["dropout"])))
