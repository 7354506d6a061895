"""``linear`` — small data similar to the source: logistic regression on the final CNN codes.

The whole network is frozen; the classifier is multinomial logistic regression on the pooled
output of the last stage, its L2 strength chosen by cross-validation on the training images.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import FitContext, FittedModel
from .families import FeatureStoreStrategy


class LinearStrategy(FeatureStoreStrategy):
    name: ClassVar[str] = "linear"
    description: ClassVar[str] = "Frozen network; logistic regression on the final CNN codes."
    case: ClassVar[str] = "small & similar"
    defaults: ClassVar[dict[str, Any]] = {"layer": "pool", "pool": "avg"}

    @classmethod
    def cv_candidates(cls, backbone: Any) -> list[dict[str, Any]]:
        return [{"layer": "pool"}]

    def fit(self, ctx: FitContext) -> FittedModel:
        from ._probe import fit_feature_model

        return fit_feature_model(self.name, ctx, layer=ctx.params.get("layer") or "pool",
                                 pool=ctx.params.get("pool", "avg"), hidden=(), dropout=0.0)
