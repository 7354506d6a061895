"""``partial`` — larger data similar to the source: fine-tune all but the first k stages.

Pretrained initialisation; the stem and the first ``freeze_stages`` stages (or everything up to
``freeze_until``) stay frozen; every BatchNorm keeps fixed running statistics, the source's or,
when the data is far from the source, re-estimated on the training images (``bn_policy="auto"``,
see ``_recipe``); the later stages train at ``lr * body_lr_ratio``, the head (started at the
linear probe) at ``lr``, after a warm-up.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import FitContext, FittedModel
from .families import NETWORK_DEFAULTS, NetworkStrategy


class PartialStrategy(NetworkStrategy):
    name: ClassVar[str] = "partial"
    description: ClassVar[str] = (
        "Pretrained network; early stages frozen (BatchNorm statistics fixed), later "
        "stages fine-tuned at a fraction of the head's learning rate."
    )
    case: ClassVar[str] = "large & similar"
    defaults: ClassVar[dict[str, Any]] = {**NETWORK_DEFAULTS, "freeze_stages": 2, "freeze_until": None,
                                          "head_init": "probe"}

    def fit(self, ctx: FitContext) -> FittedModel:
        from ._network import fit_network_strategy

        return fit_network_strategy(self.name, ctx, ctx.backbone, pretrained_body=True, head_epochs=0)
