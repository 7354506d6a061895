"""How much data is there, and would more of it still help? Measured on the training split.

- Counts: images in all splits and in the training split, per class (min, median, max) and
  the imbalance ratio (largest class / smallest class).
- Learning curve: a stratified quarter of the training split (``HOLDOUT_FRACTION``) is held
  out; the linear probe of :func:`transferkit.advisor.transferability.probe_accuracy` is
  fitted on stratified subsets of the rest at ``FRACTIONS`` of it and scored on the held-out
  part, averaged over ``REPEATS`` random hold-outs. The test split is never touched.
- Slope: least-squares fit of accuracy against log2(training images) over the last
  ``SLOPE_POINTS`` points of the curve, i.e. the accuracy gained per doubling of the data
  near the full size. It is measured at 3/4 of the training split, so it is a (slightly
  optimistic) estimate of what doubling the whole split would give the probe; fine-tuning
  typically gains more from extra data than a probe does.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..data.roles import stratified_carve, stratified_subsample
from . import transferability as tr
from ._json import json_ready

FRACTIONS = (0.125, 0.25, 0.5, 1.0)
HOLDOUT_FRACTION = 0.25
REPEATS = 2
SLOPE_POINTS = 3
# A slope (accuracy per doubling) at or above this is "more data would still help".
HELPFUL_SLOPE = 0.01
# Probe fits on at most this many images (stratified) to bound the cost.
CURVE_MAX_SAMPLES = 3000


@dataclass
class CurvePoint:
    fraction: float
    n_train: int
    accuracy: float
    std: float


@dataclass
class SizeProfile:
    n_total: int
    n_train: int
    n_classes: int
    per_class: dict[str, int]
    min_per_class: int
    median_per_class: float
    max_per_class: int
    imbalance: float  # largest / smallest training class
    learning_curve: list[CurvePoint] = field(default_factory=list)
    slope_per_doubling: float | None = None  # accuracy (0..1) gained per doubling of the data
    curve_layer: str | None = None
    seconds: float = 0.0

    @property
    def more_data_helps(self) -> bool | None:
        if self.slope_per_doubling is None or not np.isfinite(self.slope_per_doubling):
            return None
        return self.slope_per_doubling >= HELPFUL_SLOPE

    def sentence(self) -> str:
        if self.more_data_helps is None:
            return "The learning curve could not be measured (too few images per class)."
        pts = 100 * self.slope_per_doubling
        if self.more_data_helps:
            return f"More data would still help: {pts:+.1f} points of probe accuracy per doubling."
        return f"The learning curve is flat ({pts:+.1f} points per doubling): more data would barely help."

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["more_data_helps"] = self.more_data_helps
        d["sentence"] = self.sentence()
        return json_ready(d)


def count_sizes(train_labels: np.ndarray, classes: list[str], n_total: int) -> SizeProfile:
    """Counts of the training split (classes with no training image count as 0)."""
    y = np.asarray(train_labels).astype(np.int64)
    counts = np.bincount(y, minlength=len(classes))[: len(classes)]
    nonzero = counts[counts > 0]
    return SizeProfile(
        n_total=int(n_total),
        n_train=int(y.size),
        n_classes=len(classes),
        per_class={c: int(n) for c, n in zip(classes, counts, strict=True)},
        min_per_class=int(counts.min()) if counts.size else 0,
        median_per_class=float(np.median(counts)) if counts.size else 0.0,
        max_per_class=int(counts.max()) if counts.size else 0,
        imbalance=float(nonzero.max() / nonzero.min()) if nonzero.size else float("nan"),
    )


def learning_curve(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    fractions: tuple[float, ...] = FRACTIONS,
    repeats: int = REPEATS,
    seed: int = 0,
    group_ids: np.ndarray | None = None,
) -> tuple[list[CurvePoint], float | None]:
    """Probe accuracy on a held-out part of the training data at growing training fractions.

    Returns the curve and the slope (accuracy per doubling, over the last ``SLOPE_POINTS``
    points). ``features``/``labels`` must be the training split only; ``group_ids`` (one per
    row, equal for exact duplicates, see ``data.roles.duplicate_ids``) keeps each duplicate
    group on one side of the hold-out.
    """
    x = np.asarray(features)
    y = np.asarray(labels).astype(np.int64)
    groups = None if group_ids is None else np.asarray(group_ids)
    if x.shape[0] > CURVE_MAX_SAMPLES:
        keep = stratified_subsample(y, CURVE_MAX_SAMPLES, seed)
        x, y = x[keep], y[keep]
        groups = None if groups is None else groups[keep]
    accs: dict[float, list[float]] = {f: [] for f in fractions}
    sizes: dict[float, list[int]] = {f: [] for f in fractions}
    for r in range(repeats):
        rng = np.random.default_rng(seed + 1000 * r)
        # Every class with >= 2 groups gives at least one group to each side.
        pool, held = stratified_carve(y, HOLDOUT_FRACTION, rng, group_ids=groups, at_least_one=True,
                                      leave_one=True)
        if held.size == 0 or np.unique(y[pool]).size < 2:
            return [], None
        order = rng.permutation(pool)
        for f in fractions:
            # Stratified prefix: the first ceil(f * n_c) of each class in a random order, so the
            # subsets are nested (the curve does not wiggle from resampling alone).
            part = []
            for c in np.unique(y[pool]):
                members = order[y[order] == c]
                part.append(members[: max(1, int(np.ceil(f * members.size)))])
            sub = np.concatenate(part)
            accs[f].append(tr.holdout_probe_accuracy(x[sub], y[sub], x[held], y[held]))
            sizes[f].append(int(sub.size))
    points = [
        CurvePoint(fraction=f, n_train=int(np.mean(sizes[f])), accuracy=float(np.mean(accs[f])),
                   std=float(np.std(accs[f])))
        for f in fractions
    ]
    tail = points[-SLOPE_POINTS:]
    if len(tail) < 2 or len({p.n_train for p in tail}) < 2:
        return points, None
    slope = float(np.polyfit(np.log2([p.n_train for p in tail]), [p.accuracy for p in tail], 1)[0])
    return points, slope


def measure_size(
    train_labels: np.ndarray,
    classes: list[str],
    n_total: int,
    *,
    features: np.ndarray | None = None,
    layer: str | None = None,
    seed: int = 0,
    group_ids: np.ndarray | None = None,
) -> SizeProfile:
    """Counts, plus the learning curve when the training ``features`` (at ``layer``) are given.

    ``group_ids``: duplicate group per training image (see :func:`learning_curve`)."""
    t0 = time.perf_counter()
    size = count_sizes(train_labels, classes, n_total)
    if features is not None and size.min_per_class >= 2:
        size.learning_curve, size.slope_per_doubling = learning_curve(features, train_labels, seed=seed,
                                                                      group_ids=group_ids)
        size.curve_layer = layer
    size.seconds = time.perf_counter() - t0
    return size
