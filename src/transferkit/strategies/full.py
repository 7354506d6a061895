"""``full`` — larger data unlike the source: fine-tune every layer from the pretrained weights.

The head first: it starts at the exact linear-probe solution on stored features
(``head_init="probe"``, the "head first" phase done in closed form), then ``head_epochs`` optional
epochs of head-only training; then every layer, the body at ``lr * body_lr_ratio``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .base import FitContext, FittedModel
from .families import NETWORK_DEFAULTS, NetworkStrategy


class FullStrategy(NetworkStrategy):
    name: ClassVar[str] = "full"
    description: ClassVar[str] = (
        "Pretrained network; head trained alone first (body frozen), then every layer "
        "fine-tuned, the body at a fraction of the head's learning rate."
    )
    case: ClassVar[str] = "large & different (pretrained initialisation)"
    defaults: ClassVar[dict[str, Any]] = {**NETWORK_DEFAULTS, "head_epochs": 0, "head_init": "probe"}

    def fit(self, ctx: FitContext) -> FittedModel:
        from ._network import fit_network_strategy

        return fit_network_strategy(self.name, ctx, ctx.backbone, pretrained_body=True, freeze_stages=0,
                                    freeze_until=None)
