"""Classification metrics computed the same way everywhere (evaluate, compare, advisor).

Accuracy and balanced accuracy come with their 95% intervals over the scored images (Wilson for
accuracy, a bootstrap over the images for balanced accuracy: see ``transferkit.stats``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy (each with ``*_interval`` [low, high]), macro F1, per-class
    precision/recall/F1/support, confusion matrix."""
    from .stats import accuracy_summary

    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    spread = accuracy_summary(y_true, y_pred)
    labels = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    present = support > 0
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
        # balanced accuracy over the classes present in the scored split only
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "accuracy_interval": [spread["accuracy"]["low"], spread["accuracy"]["high"]],
        "balanced_accuracy_interval": [spread["balanced_accuracy"]["low"], spread["balanced_accuracy"]["high"]],
        "interval": {"confidence": 0.95, "accuracy": spread["accuracy"]["method"],
                     "balanced_accuracy": spread["balanced_accuracy"]["method"]},
        "macro_f1": float(np.mean(f1[present])) if present.any() else float("nan"),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }
