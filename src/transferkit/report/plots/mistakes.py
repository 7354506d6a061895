"""Figures of what the best model gets wrong: the confusion matrix and a grid of misclassified images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from .style import NEGATIVE, plt, save, shorten


def plot_confusion(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    classes: Sequence[str] | None,
    path: str | Path,
    *,
    title: str = "Confusion matrix",
) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class).

    Colour is the fraction of each true class; with at most 20 classes each cell also shows
    its count. Class names label the axes when there are at most 50 classes.
    """
    cm = np.asarray(matrix, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ConfigError(f"confusion matrix must be square (C, C); got shape {cm.shape}.")
    n = cm.shape[0]
    classes = list(classes) if classes is not None and len(classes) == n else [str(i) for i in range(n)]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = min(12.0, max(4.5, 0.45 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.grid(False)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if n <= 50:
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(
            [shorten(c) for c in classes],
            rotation=45 if n > 4 else 0,
            ha="right" if n > 4 else "center",
            fontsize=9 if n <= 20 else 7,
        )
        ax.set_yticklabels([shorten(c) for c in classes], fontsize=9 if n <= 20 else 7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j] == 0 and i != j:
                    continue
                count = int(cm[i, j]) if float(cm[i, j]).is_integer() else cm[i, j]
                ax.text(
                    j,
                    i,
                    f"{count}",
                    ha="center",
                    va="center",
                    fontsize=9 if n <= 12 else 7,
                    color="white" if norm[i, j] > 0.55 else "black",
                )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


def _to_hwc(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 3:  # (N, H, W) grayscale
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 4:
        raise ConfigError(f"images must be (N,3,H,W), (N,H,W,3) or (N,H,W); got shape {arr.shape}.")
    if arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def plot_misclassified(
    images: np.ndarray,
    true_labels: Sequence[Any],
    pred_labels: Sequence[Any],
    path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    max_images: int = 24,
) -> Path:
    """A grid of up to ``max_images`` misclassified images captioned "true → pred".

    ``images``: uint8 (N,3,H,W), (N,H,W,3) or (N,H,W). Labels are class indices (looked up in
    ``classes``) or names.
    """
    arr = _to_hwc(images)
    n = min(len(arr), len(true_labels), len(pred_labels), max_images)
    if n == 0:
        raise ConfigError("plot_misclassified needs at least one image with its true and predicted label.")

    def name(label: Any) -> str:
        if classes is not None and isinstance(label, int | np.integer) and 0 <= int(label) < len(classes):
            return str(classes[int(label)])
        return str(label)

    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.15 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(arr[k], interpolation="nearest" if arr.shape[1] < 64 else "antialiased")
        ax.set_title(
            f"{shorten(name(true_labels[k]), 12)} → {shorten(name(pred_labels[k]), 12)}",
            fontsize=8,
            color=NEGATIVE,
        )
    fig.suptitle("Misclassified examples (true → predicted)", fontsize=11)
    fig.tight_layout()
    return save(fig, path)
