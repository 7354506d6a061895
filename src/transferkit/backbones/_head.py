"""The one builder of classification heads, for fine-tuned networks and feature-store classifiers.

``TransferNet`` (the network strategies) and ``FeatureModel`` (the feature-store strategies) both
put this head on pooled features, so a head trained one way can be rebuilt the other way and saved
weights keep their names: a plain ``Linear`` when there is nothing else to add (state-dict keys
``weight``/``bias``), else a ``Sequential`` of Linear-ReLU[-Dropout] per hidden width, a Dropout
before the output when there are no hidden layers but a dropout rate, and the output Linear.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def build_head(in_features: int, num_classes: int, hidden: Sequence[int] = (), dropout: float = 0.0) -> nn.Module:
    if len(hidden) == 0 and dropout == 0.0:
        return nn.Linear(in_features, num_classes)
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        # Not in place: ONNX export and the MLP trainer's own dropout pass read the input again.
        layers += [nn.Linear(width, h), nn.ReLU(inplace=False)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    if not hidden and dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
