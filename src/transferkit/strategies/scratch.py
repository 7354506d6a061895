"""``scratch`` — the same architecture from random initialisation: the baseline of transfer.

Every layer trains at one, higher learning rate with BatchNorm in training mode; the random
weights are seeded by the run's seed and the card's preprocessing and model settings are kept,
so the only difference from ``full`` is where the weights start.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import FitContext, FittedModel
from .families import NETWORK_DEFAULTS, NetworkStrategy


class ScratchStrategy(NetworkStrategy):
    name: ClassVar[str] = "scratch"
    description: ClassVar[str] = (
        "Same architecture from random initialisation, every layer trained at one "
        "learning rate: the baseline that transfer is measured against."
    )
    case: ClassVar[str] = "large & very different (baseline)"
    pretrained: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {**NETWORK_DEFAULTS, "lr": 3e-3, "body_lr_ratio": 1.0, "bn_policy": "train"}

    def fit(self, ctx: FitContext) -> FittedModel:
        from ..backbones import load_backbone
        from ._network import fit_network_strategy

        random_bb = load_backbone(ctx.backbone.spec, pretrained=False, seed=ctx.seed)
        model = fit_network_strategy(self.name, ctx, random_bb, pretrained_body=False, freeze_stages=0,
                                     freeze_until=None, head_epochs=0)
        model.info["init"] = f"random, seed {ctx.seed}"
        return model
