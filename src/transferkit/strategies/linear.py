"""``linear`` — small data similar to the source: logistic regression on the final CNN codes.

The whole network is frozen; the classifier is multinomial logistic regression on the pooled
output of the last stage, its L2 strength chosen by cross-validation on the training images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ._probe import FeatureModel, fit_feature_model
from .base import FitContext, Strategy


class LinearStrategy(Strategy):
    name: ClassVar[str] = "linear"
    description: ClassVar[str] = "Frozen network; logistic regression on the final CNN codes."
    case: ClassVar[str] = "small & similar"
    uses_feature_store: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"layer": "pool", "pool": "avg"}

    def fit(self, ctx: FitContext) -> FeatureModel:
        return fit_feature_model(self.name, ctx, layer=ctx.params.get("layer") or "pool",
                                 pool=ctx.params.get("pool", "avg"), hidden=(), dropout=0.0)

    @classmethod
    def load(cls, directory: Path, backbone) -> FeatureModel:
        return FeatureModel.load(directory, backbone)
