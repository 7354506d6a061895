"""The similarity signals computed from what was measured: BN divergences, probe accuracies per
cut point, source-head probabilities; and their weighted combination. Definitions and the
calibration of the constants: the ``similarity`` module docstring and the comments below.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import transferability as tr

# Scale of the divergence -> similarity map exp(-d / BN_SCALE). Calibration (mobilenetv1_075
# Keras card, 200 training images each): mean group divergence hymenoptera 0.04, flowers5
# (128 px photos upsampled to 224) 0.9, MNIST 1.8, sklearn digits 2.2; a scale of 2 spreads
# these over 0.98 / 0.64 / 0.41 / 0.34.
BN_SCALE = 2.0
# Added to late_gain in the profile signal: with a late gain of 0 (the last layers add
# nothing over mid-depth) the profile signal is PROFILE_BASE.
PROFILE_BASE = 0.2
# MI (normalised by log Z) that counts as fully "source-like"; ImageNet-like photo sets give
# 0.2-0.25 with the mobilenetv1_075 head, MNIST 0.14, sklearn digits 0.06.
MI_REF = 0.25
# Weights of the signals in the summary score (renormalised over the available ones). The BN
# signal needs no labels, covers every stage and was the only one to order all four
# calibration sets correctly on its own, so it weighs most; the profile is the noisiest.
SIGNAL_WEIGHTS = {"bn": 0.5, "source": 0.3, "profile": 0.2}
# Probe settings for the per-layer profile: 3-fold CV on at most this many training images.
PROFILE_FOLDS = 3
PROFILE_MAX_SAMPLES = 2000


# ---------------------------------------------------------------------- BN statistics


def bn_group_divergence(records: list[dict[str, Any]], group_order: list[str]) -> dict[str, float]:
    """Mean divergence per parameter group, in ``group_order`` (then any other group)."""
    by_group: dict[str, list[float]] = {}
    for r in records:
        by_group.setdefault(r["group"], []).append(r["divergence"])
    order = [g for g in group_order if g in by_group] + [g for g in by_group if g not in group_order]
    return {g: float(np.mean(by_group[g])) for g in order}


def bn_signal(divergence_by_group: dict[str, float]) -> float:
    """``exp(-mean_g d_g / BN_SCALE)`` over the parameter groups' mean divergences."""
    return float(np.exp(-np.mean(list(divergence_by_group.values())) / BN_SCALE))


def source_signal(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """LEEP, normalised LEEP, source entropy, mutual information and the ``source`` signal (``value``)
    from the source head's softmax ``probs`` (N, Z) on images with target ``labels``."""
    nleep = tr.normalized_leep(probs, labels)
    ent = tr.source_entropy(probs)
    mi = tr.source_mutual_information(probs)
    return {"leep": tr.leep(probs, labels), "normalized_leep": nleep, "source_entropy": ent, "source_mi": mi,
            "value": float(np.nanmean([nleep, 1.0 - ent, min(1.0, mi / MI_REF)]))}


# ---------------------------------------------------------------------- probe profile


def probe_profile(
    features: dict[str, np.ndarray], labels: np.ndarray, layers: list[str], *, seed: int = 0
) -> dict[str, float]:
    """Cross-validated probe accuracy (``PROFILE_FOLDS`` folds) at each of ``layers``."""
    return {
        layer: tr.probe_accuracy(
            features[layer], labels, folds=PROFILE_FOLDS, max_samples=PROFILE_MAX_SAMPLES, seed=seed
        )
        for layer in layers
    }


def profile_signal(profile: dict[str, float], chance: float) -> float | None:
    """The ``profile`` signal of the module docstring from an ordered {layer: accuracy} dict
    of distinct cut points (shallow -> deep)."""
    accs = np.array([a for a in profile.values() if a is not None and np.isfinite(a)], dtype=np.float64)
    if accs.size < 2:
        return None
    a_last, a_best = float(accs[-1]), float(accs.max())
    a_prev = float(accs[:-1].max())
    late_gain = (a_last - a_prev) / max(1.0 - a_prev, 1e-6)
    keep = (a_last - chance) / (a_best - chance) if a_best - chance > 1e-6 else 0.0
    return float(np.clip(PROFILE_BASE + late_gain, 0.0, 1.0) * np.clip(keep, 0.0, 1.0))


# ---------------------------------------------------------------------- combination


def summary_score(signals: dict[str, float | None]) -> float:
    """Weighted mean (``SIGNAL_WEIGHTS``) of the available signals; NaN when none is available."""
    num = den = 0.0
    for name, value in signals.items():
        if value is None or not np.isfinite(value):
            continue
        w = SIGNAL_WEIGHTS.get(name, 0.0)
        num += w * float(np.clip(value, 0.0, 1.0))
        den += w
    return num / den if den > 0 else float("nan")


def distinct_layers(features: dict[str, np.ndarray], layers: list[str]) -> list[str]:
    """``layers`` without those whose features equal the previous kept layer's (pool == last stage)."""
    kept: list[str] = []
    for name in layers:
        if kept:
            a, b = features[kept[-1]], features[name]
            if a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5):
                continue
        kept.append(name)
    return kept
