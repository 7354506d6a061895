"""Class imbalance in training: the class-weighted loss and how imbalanced a label set is.

``class_weight="balanced"`` weighs each class's loss by ``n / (classes * count)`` (the weights
scikit-learn's ``class_weight="balanced"`` uses), so a minority class is not traded away for a
lower mean loss on the majority class. Weights are computed from the training labels only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Above this largest/smallest class-count ratio the training classes count as imbalanced: the
# "auto" class weighting turns on (network loss and logistic probe) and model selection compares
# balanced accuracy. 1.5 leaves near-balanced sets (a few images more in one class) untouched;
# breastmnist (570 benign+normal / 210 malignant, ratio 2.7) is well above it.
IMBALANCE_RATIO = 1.5


def imbalance_ratio(labels: np.ndarray) -> float:
    """Largest class count over smallest (classes present in ``labels``); 1.0 when balanced or empty."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    counts = counts[counts > 0]
    return float(counts.max() / counts.min()) if len(counts) else 1.0


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """``n / (present classes * count)`` per class index (1.0 for a class absent from ``labels``)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels).astype(np.float64)
    present = counts > 0
    weights = np.ones_like(counts)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


class TrainingLoss(nn.Module):
    """Cross-entropy with label smoothing and optional per-class weights (padded with 1.0 to the
    number of logits, so a class with no training image keeps weight 1)."""

    def __init__(self, label_smoothing: float = 0.0, class_weights: np.ndarray | None = None):
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = None
        if self.class_weights is not None:
            c = logits.shape[1]
            w = self.class_weights[:c]
            weight = torch.cat([w, torch.ones(c - len(w))]) if len(w) < c else w
            weight = weight.to(logits.device)
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=self.label_smoothing)
