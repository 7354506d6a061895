"""The fine-tuning recipe's data-dependent choices, resolved when a network strategy fits.

Three parameters of ``partial`` / ``full`` / ``scratch`` default to "auto" and are resolved here
from the training data; what was resolved, and the measurement behind it, goes into the model's
info (``recipe``) and from there into the run's ``config.json``:

- ``warmup_epochs``: one epoch of linear warm-up, at most a fifth of the run. Without it, the
  first full-lr AdamW steps knock the probe-started network over (breastmnist, partial: first-
  epoch training loss 2.11 without, 0.48 with one epoch of warm-up; full 2.78 -> 0.50; the
  step-0 loss is 0.41, so the damage is done by the first updates, not by the start).
- ``class_weight``: "balanced" (class-weighted loss, and model selection on balanced accuracy)
  when the largest training class has more than ``IMBALANCE_RATIO`` times the smallest's images.
- ``bn_policy``: from the BatchNorm divergence between the training images and the network's
  running statistics, measured on at most ``BN_SAMPLE`` training images (one forward pass, the
  advisor's measurement): "eval" (keep the source statistics) when they are close; when the mean
  divergence exceeds ``BN_FAR``, AdaBN (re-estimate the statistics on the training images, then
  keep them fixed) is proposed and kept only if the linear probe on the re-estimated features
  beats the one on the source features by one standard error in cross-validation on the learnable
  images (``_network.start_network``): a far divergence alone did not predict a gain
  (breastmnist, divergence 2.4: the probe on re-estimated features scored 0.756 held-out against
  0.827; MNIST, 1.8: 82.5 against 85.7). BatchNorm in training mode is never chosen: with
  batch statistics the probe-started network's step-0 training loss on breastmnist is 18.4
  instead of 0.41.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.balance import IMBALANCE_RATIO, imbalance_ratio
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..backbones import Backbone

WARMUP_EPOCHS = 1.0
WARMUP_MAX_SHARE = 0.2
# Training images the BatchNorm divergence is measured on (a seeded sample): one forward pass.
BN_SAMPLE = 256
# Mean per-group BatchNorm divergence (advisor.target_pass) above which "auto" re-estimates the
# statistics on the target. Calibration (mobilenetv1_075): hymenoptera 0.04, flowers5 0.9,
# MNIST 1.8, sklearn digits 2.2, breastmnist 2.4 (see the module docstring of this file's tests).
BN_FAR = 1.2
NETWORK_BN_POLICIES = ("auto", "eval", "frozen", "train", "adabn")
CLASS_WEIGHTS = ("auto", "balanced", "none")


def resolve_warmup(value: Any, epochs: int) -> float:
    """``warmup_epochs`` as a number: "auto" -> min(WARMUP_EPOCHS, WARMUP_MAX_SHARE * epochs)."""
    if value == "auto":
        return float(min(WARMUP_EPOCHS, WARMUP_MAX_SHARE * epochs))
    return value  # TrainConfig checks it


def resolve_class_weight(value: Any, train_labels: np.ndarray) -> dict[str, Any]:
    """{"class_weight", "selection_metric", "imbalance_ratio", "class_counts", "requested"}."""
    if value not in CLASS_WEIGHTS:
        raise ConfigError(f"The 'class_weight' parameter must be one of {{'auto','balanced','none'}}. "
                          f"Got {value!r} instead.")
    ratio = imbalance_ratio(train_labels)
    resolved = value if value != "auto" else ("balanced" if ratio > IMBALANCE_RATIO else "none")
    return {"requested": value, "class_weight": resolved,
            "selection_metric": "balanced_accuracy" if resolved == "balanced" else "accuracy",
            "imbalance_ratio": round(ratio, 3), "threshold": IMBALANCE_RATIO,
            "class_counts": np.bincount(np.asarray(train_labels, dtype=np.int64)).tolist()}


def bn_divergence(backbone: Backbone, images: np.ndarray, train_idx: np.ndarray, seed: int,
                  device: str) -> tuple[float | None, dict[str, float]]:
    """Mean per-group BatchNorm divergence of (a sample of) the training images, and per group."""
    from ..advisor.signals import bn_group_divergence
    from ..advisor.target_pass import run_target_images

    idx = np.asarray(train_idx, dtype=np.int64)
    if len(idx) > BN_SAMPLE:
        idx = np.random.default_rng(seed).choice(idx, BN_SAMPLE, replace=False)
    records, _, _ = run_target_images(backbone, np.asarray(images[np.sort(idx)]), device=device,
                                      want_source=False, precision="fp32")
    if not records:
        return None, {}
    by_group = bn_group_divergence(records, [name for name, _ in backbone.param_groups()])
    return float(np.mean(list(by_group.values()))), by_group


def adabn_beats_source(source_score: float, adapted_score: float | None, n_learn: int) -> tuple[bool, float]:
    """The recipe's AdaBN rule, on cross-validated scores of the linear probe over ``n_learn``
    learnable images: (keep AdaBN, the margin). The re-estimated features must beat the source
    features by one standard error of the source's score; AdaBN is the change, so a tie keeps the
    source statistics. ``_network.start_network`` applies it, and ``auto`` applies it once for its
    fine-tuning trials (``advisor.select.trial_batchnorm``)."""
    from ..stats import proportion_se

    margin = proportion_se(source_score, n_learn)
    return adapted_score is not None and adapted_score > source_score + margin, margin


def resolve_bn_policy(value: Any, *, pretrained: bool, backbone: Backbone, images: np.ndarray,
                      train_idx: np.ndarray, seed: int, device: str) -> dict[str, Any]:
    """{"bn_policy" (the engine's), "adabn" (re-estimate first), "requested", measurement...}."""
    if value not in NETWORK_BN_POLICIES:
        raise ConfigError(f"The 'bn_policy' parameter must be one of {{{','.join(map(repr, NETWORK_BN_POLICIES))}}}. "
                          f"Got {value!r} instead.")
    out: dict[str, Any] = {"requested": value}
    if value != "auto":
        return {**out, "bn_policy": "eval" if value == "adabn" else value, "adabn": value == "adabn"}
    if not pretrained:  # random weights have no source statistics to keep
        return {**out, "bn_policy": "train", "adabn": False, "reason": "random initialisation"}
    div, by_group = bn_divergence(backbone, images, train_idx, seed, device)
    if div is None:
        return {**out, "bn_policy": "eval", "adabn": False, "reason": "the network has no BatchNorm"}
    far = div > BN_FAR
    return {**out, "bn_policy": "eval", "adabn": far, "resolved": "adabn" if far else "eval",
            "bn_divergence": round(div, 4), "bn_divergence_by_group": {k: round(v, 4) for k, v in by_group.items()},
            "threshold": BN_FAR, "measured_on": int(min(len(train_idx), BN_SAMPLE)),
            "reason": (f"mean BatchNorm divergence {div:.2f} {'>' if far else '<='} {BN_FAR}: "
                       + ("statistics re-estimated on the training images (AdaBN), then fixed" if far
                          else "the source statistics are kept"))}
