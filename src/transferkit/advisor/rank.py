"""Rank candidate backbones for a dataset by transferability, without fine-tuning any.

For every candidate: pooled features of the dataset (``"pool"``, via the feature store), then on
the training split only: LogME (You et al. 2021), leave-one-out cosine kNN accuracy (k=10) and
a 3-fold cross-validated linear-probe accuracy. The combined score is the mean over the three
metrics of each candidate's normalised rank (1 = best on that metric, 0 = worst), with the
probe accuracy breaking ties; the list comes back best first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.roles import train_mask
from . import transferability as tr
from .plan import _extract

METRICS = ("logme", "knn_acc", "probe_acc")
RANK_LAYER = "pool"


def _load(spec: Any):
    """A Backbone from a spec string / path, or the Backbone itself."""
    if hasattr(spec, "cut_points") and hasattr(spec, "model"):
        return spec
    from ..backbones import load_backbone

    return load_backbone(spec)


def _label(spec: Any, backbone) -> str:
    if isinstance(spec, str | Path):
        return str(spec)
    name = str(getattr(backbone, "name", "backbone"))
    return name if getattr(backbone, "pretrained", True) else f"{name} (random init)"


def score_features(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """LogME, kNN (k=10, leave-one-out, cosine) and 3-fold CV probe accuracy of one feature matrix."""
    return {
        "logme": tr.logme(features, labels),
        "knn_acc": tr.knn_accuracy(features, labels, k=10, seed=seed),
        "probe_acc": tr.probe_accuracy(features, labels, folds=3, seed=seed),
    }


def combine(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``rank_score`` (mean normalised rank over METRICS) and sort best first."""
    n = len(rows)
    for row in rows:
        row["rank_score"] = 0.0
    for metric in METRICS:
        values = np.array([r[metric] if np.isfinite(r[metric]) else -np.inf for r in rows])
        # Average ranks for ties: 0 = worst, n-1 = best.
        order = values.argsort(kind="stable")
        ranks = np.empty(n)
        ranks[order] = np.arange(n)
        for v in np.unique(values):
            same = values == v
            ranks[same] = ranks[same].mean()
        for r, rank in zip(rows, ranks, strict=True):
            r["rank_score"] += (rank / (n - 1) if n > 1 else 1.0) / len(METRICS)
    rows.sort(key=lambda r: (-r["rank_score"], -(r["probe_acc"] if np.isfinite(r["probe_acc"]) else -1)))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def rank_backbones(
    dataset,
    backbone_specs: list[Any],
    *,
    store_dir: str | Path,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Rank ``backbone_specs`` (spec strings / paths / Backbone objects) for ``dataset``.

    Returns one dict per candidate, best first: spec, backbone, pretrained, logme, knn_acc,
    probe_acc, rank_score (in [0, 1]), rank, n_train, feature_dim, seconds, features_from_cache.
    """
    if not backbone_specs:
        from ..errors import ConfigError

        raise ConfigError("rank_backbones needs at least one backbone spec; got none.")
    mask = train_mask(dataset)
    y = np.asarray(dataset.labels)[mask]
    rows = []
    for position, spec in enumerate(backbone_specs):
        t0 = time.perf_counter()
        backbone = _load(spec)
        layer = RANK_LAYER if RANK_LAYER in [cp.name for cp in backbone.cut_points] else backbone.cut_points[-1].name
        fs = _extract(backbone, dataset, [layer], store_dir=store_dir, device=device, progress=progress)
        x = np.asarray(fs.features[layer])[mask]
        row = {
            "spec": _label(spec, backbone),
            "input_index": position,
            "backbone": str(getattr(backbone, "name", "")),
            "pretrained": bool(getattr(backbone, "pretrained", True)),
            "layer": layer,
            **score_features(x, y, seed=seed),
            "n_train": int(len(y)),
            "feature_dim": int(x.shape[1]),
            "features_from_cache": bool(getattr(fs, "from_cache", False)),
        }
        row["seconds"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
    return combine(rows)
