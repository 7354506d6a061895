"""How similar is a dataset to the data the backbone was trained on? Measured, not asked.

Three independent signals, none of which needs the source data:

1. **BatchNorm statistics** (``bn``). Every BatchNorm layer stores the running mean and
   variance of its input over the source data. We run a bounded subsample of the target
   training images (``BN_MAX_IMAGES``) through the network in eval mode and record, at each
   BN layer, the per-channel mean and variance of its *input* over those images. Per channel
   the target and source statistics are two Gaussians; their symmetric KL divergence

       J_c = 1/4 * [ v_t/v_s + v_s/v_t - 2 + (m_t - m_s)^2 * (1/v_t + 1/v_s) ]

   (``v`` with the layer's eps added, so dead channels stay finite) is capped at
   ``BN_CHANNEL_CAP`` and averaged over channels: the layer's divergence ``d_l``. Layers are
   grouped by the backbone's parameter groups (stem, stage1..N, top); a group's divergence
   ``d_g`` is the mean of its layers', its similarity ``exp(-d_g / BN_SCALE)``. The signal is
   ``exp(-mean_g(d_g) / BN_SCALE)``. Unavailable for networks without BatchNorm (AlexNet).

2. **Per-layer probe profile** (``profile``). Cross-validated linear-probe accuracy on the
   stored features of the training split at every cut point. On data like the source,
   accuracy keeps rising to the last layer; on different data the top layers (the most
   source-specific) stop helping or hurt. Cut points whose features equal the previous
   one's (``pool`` is often the pooled last stage) are merged. With ``chance`` the
   majority-class rate, ``a_last`` the last cut point's accuracy, ``a_prev`` the best of the
   earlier ones and ``a_best`` the best of all:

       late_gain = (a_last - a_prev) / (1 - a_prev)   (share of the remaining error that the
                                                       last stage removes)
       profile   = clip(PROFILE_BASE + late_gain, 0, 1) * clip((a_last - chance) / (a_best - chance), 0, 1)

   so the signal is low when the last stage stops paying off and is scaled down further when
   an earlier layer beats the last one. It is the noisiest signal (probe accuracies on a
   few hundred images) and gets the smallest weight.

3. **Source head** (``source``), when the weights keep their source classifier, from its
   softmax over the Z source classes on the same subsample: the mean of
   - normalised LEEP ``1 + LEEP / H(Y)`` (the fraction of label uncertainty the source-class
     predictions remove),
   - ``1 - mean normalised entropy`` of the predictions (how sure the head is), and
   - ``min(1, MI / MI_REF)`` with ``MI = H(mean prediction) - mean H(prediction)`` divided by
     ``log Z``: the information the head's prediction carries about the image. On foreign
     images the predictions collapse onto a few catch-all source classes (MNIST digits
     become "envelope" or "nematode") and MI falls, even where the head is confident.

**Summary score** in [0, 1]: the weighted mean of the available signals with weights
``SIGNAL_WEIGHTS`` (bn 0.5, source 0.3, profile 0.2), renormalised over the signals that
could be measured. ``SIMILAR_THRESHOLD`` (0.5) separates "similar" from "different" for the
four-case table. The calibration of the constants is recorded next to them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.roles import stratified_subsample, train_indices
from . import transferability as tr
from ._json import json_ready
from .signals import (
    BN_SCALE,
    MI_REF,
    PROFILE_BASE,
    PROFILE_FOLDS,
    PROFILE_MAX_SAMPLES,
    SIGNAL_WEIGHTS,
    bn_group_divergence,
    bn_signal,
    distinct_layers,
    probe_profile,
    profile_signal,
    source_signal,
    summary_score,
)
from .target_pass import BN_CHANNEL_CAP, run_target_images, symmetric_kl_gaussian

if TYPE_CHECKING:  # pragma: no cover
    from ..backbones import Backbone
    from ..data.roles import Roles

# Names other modules and tests read from here (the signals and the pass live in their own modules).
__all__ = [
    "BN_CHANNEL_CAP", "BN_MAX_IMAGES", "BN_SCALE", "DEFINITION", "MI_REF", "PROFILE_BASE", "PROFILE_FOLDS",
    "PROFILE_MAX_SAMPLES", "SIGNAL_WEIGHTS", "SIMILAR_THRESHOLD", "LayerSimilarity", "Similarity",
    "bn_group_divergence", "distinct_layers", "measure_similarity", "probe_profile", "profile_signal",
    "run_target_images", "similarity_of_subset", "subsample_indices", "summary_score", "symmetric_kl_gaussian",
]


# Images (from the training split, stratified) run through the network for the BN and
# source-head signals: enough for stable per-channel means/variances, bounded cost.
BN_MAX_IMAGES = 256
# Summary score at or above which the data counts as "similar" in the four-case table
# (``Similarity.similar`` reads it from this module, so a test can move it here).
SIMILAR_THRESHOLD = 0.5


# ---------------------------------------------------------------------------- results


@dataclass
class LayerSimilarity:
    """What was measured at one cut point / parameter group."""

    layer: str
    probe_acc: float | None = None
    bn_divergence: float | None = None  # mean symmetric KL of the group's BN inputs
    bn_similarity: float | None = None  # exp(-bn_divergence / BN_SCALE)
    bn_layers: int = 0


@dataclass
class Similarity:
    """Similarity of a dataset to the backbone's source data (see the module docstring)."""

    score: float
    signals: dict[str, float | None]
    layers: list[LayerSimilarity]
    best_layer: str | None = None
    last_layer: str | None = None
    chance: float | None = None
    leep: float | None = None
    normalized_leep: float | None = None
    source_entropy: float | None = None
    source_mi: float | None = None
    n_images: int = 0  # images used for the BN / source-head signals
    forward_seconds_per_image: float | None = None  # measured in that pass (fp32, eval)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def similar(self) -> bool:
        return self.score >= SIMILAR_THRESHOLD

    def layer(self, name: str) -> LayerSimilarity | None:
        return next((layer for layer in self.layers if layer.layer == name), None)

    def probe_profile(self) -> dict[str, float]:
        return {x.layer: x.probe_acc for x in self.layers if x.probe_acc is not None}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["similar"] = self.similar
        d["definition"] = DEFINITION
        return json_ready(d)


DEFINITION = (
    "score = weighted mean of the available signals (weights bn 0.5, source 0.3, profile 0.2, "
    "renormalised over those measured). bn = exp(-mean_g d_g / 2), d_g = mean over the BatchNorm "
    "layers of parameter group g and their channels of the symmetric KL (capped at 10) between the "
    "Gaussian of the layer input on the target training images and the layer's running (source) "
    "statistics. source = mean(1 + LEEP/H(Y), 1 - mean normalised entropy of the source predictions, "
    "min(1, I(prediction; image)/log Z / 0.25)). profile = clip(0.2 + (a_last - a_prev)/(1 - a_prev), "
    "0, 1) * clip((a_last - chance)/(a_best - chance), 0, 1) from 3-fold CV linear-probe accuracy "
    "per distinct cut point. similar when score >= 0.5."
)


# ---------------------------------------------------------------------- measuring


def measure_similarity(
    backbone: Backbone,
    *,
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    images: np.ndarray | None,
    image_labels: np.ndarray | None = None,
    device: str = "auto",
    seed: int = 0,
    _pass: tuple | None = None,
) -> Similarity:
    """All signals for one (training) dataset.

    ``features``: {cut point: (N, D)} for the training images (ordered shallow -> deep, as
    ``backbone.cut_points``); ``labels`` their labels. ``images``: uint8 (n, 3, H, W) subsample
    of the training images at the backbone's input size (n <= ``BN_MAX_IMAGES``) with their
    labels ``image_labels``, for the BN and source-head signals (None skips both).
    """
    t0 = time.perf_counter()
    notes: list[str] = []
    labels = np.asarray(labels)
    chance = tr.chance_accuracy(labels)
    cut_names = [cp.name for cp in backbone.cut_points]
    layers = [name for name in cut_names if name in features] + [
        name for name in features if name not in cut_names
    ]
    profile = probe_profile(features, labels, layers, seed=seed)
    per_layer = {name: LayerSimilarity(layer=name, probe_acc=profile[name]) for name in layers}

    bn_value: float | None = None
    source_value: float | None = None
    leep_v = nleep = ent = mi = None
    n_images = 0
    per_image = None
    if images is not None and len(images):
        n_images = int(len(images))
        if _pass is not None:
            records, probs, per_image = _pass
        else:
            records, probs, per_image = run_target_images(backbone, images, device=device)
        if records:
            group_order = [g for g, _ in _safe_param_groups(backbone)] or cut_names
            div = bn_group_divergence(records, group_order)
            for g, d in div.items():
                entry = per_layer.setdefault(g, LayerSimilarity(layer=g))
                entry.bn_divergence = d
                entry.bn_similarity = float(np.exp(-d / BN_SCALE))
                entry.bn_layers = sum(1 for r in records if r["group"] == g)
            bn_value = bn_signal(div)
        else:
            notes.append(
                f"{backbone.name} has no BatchNorm layers: the BN-statistics signal is unavailable."
            )
        if probs is not None and image_labels is not None:
            src = source_signal(probs, image_labels)
            leep_v, nleep, ent, mi = src["leep"], src["normalized_leep"], src["source_entropy"], src["source_mi"]
            source_value = src["value"]
        elif not getattr(backbone, "has_source_head", False):
            notes.append(f"{backbone.name} has no source classifier: LEEP / source entropy unavailable.")
    else:
        notes.append("No images given: BN-statistics and source-head signals not measured.")

    distinct = distinct_layers(features, layers)
    signals = {
        "bn": bn_value,
        "source": source_value,
        "profile": profile_signal({k: profile[k] for k in distinct}, chance),
    }
    finite = {k: v for k, v in profile.items() if v is not None and np.isfinite(v)}
    best = max(finite, key=finite.get) if finite else None
    ordered = [per_layer[name] for name in _layer_order(per_layer, cut_names)]
    return Similarity(
        score=summary_score(signals),
        signals=signals,
        layers=ordered,
        best_layer=best,
        last_layer=layers[-1] if layers else None,
        chance=chance,
        leep=leep_v,
        normalized_leep=nleep,
        source_entropy=ent,
        source_mi=mi,
        n_images=n_images,
        forward_seconds_per_image=per_image,
        notes=notes,
        seconds=time.perf_counter() - t0,
    )


def _safe_param_groups(backbone) -> list:
    try:
        return list(backbone.param_groups())
    except Exception:
        return []


def _layer_order(per_layer: dict[str, LayerSimilarity], cut_names: list[str]) -> list[str]:
    """Cut points in order, with parameter groups (stem/stage*/top) interleaved by name."""
    names = list(per_layer)
    rank = {n: i for i, n in enumerate(cut_names)}
    if "top" in names and "pool" in rank:
        rank.setdefault("top", rank["pool"] - 0.5)
    return sorted(names, key=lambda n: (rank.get(n, len(rank) + names.index(n)), names.index(n)))


def subsample_indices(labels: np.ndarray, n: int = BN_MAX_IMAGES, seed: int = 0) -> np.ndarray:
    """Stratified subsample (sorted indices) of at most ``n`` items."""
    return stratified_subsample(np.asarray(labels), n, seed)


def similarity_of_subset(
    dataset, backbone: Backbone, *, n_images: int = BN_MAX_IMAGES, device: str = "auto", seed: int = 0,
    roles: Roles | None = None,
) -> Similarity:
    """All three signals from one stratified subsample (<= ``n_images``) of the training images
    (``roles.train``, or the train split), with the probe profile computed on that subsample's
    features from the same pass (no feature store). Cheaper and noisier than ``advise``; for
    quick checks and the acceptance tests."""
    train_idx = train_indices(dataset, roles)
    labels = np.asarray(dataset.labels)
    pick = train_idx[subsample_indices(labels[train_idx], n_images, seed)]
    pre = backbone.preprocessing
    images = np.asarray(dataset.subset(pick).decode(tuple(pre.input_size[1:]), pre.interpolation))
    layers = [cp.name for cp in backbone.cut_points]
    feats: dict[str, np.ndarray] = {}
    result = run_target_images(backbone, images, device=device, layers=layers, features_out=feats)
    y = labels[pick]
    return measure_similarity(backbone, features=feats, labels=y, images=images, image_labels=y,
                              device=device, seed=seed, _pass=result)
