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

import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import transferability as tr

if TYPE_CHECKING:  # pragma: no cover
    from ..backbones import Backbone

# ---------------------------------------------------------------------------- constants

# Images (from the training split, stratified) run through the network for the BN and
# source-head signals: enough for stable per-channel means/variances, bounded cost.
BN_MAX_IMAGES = 256
# Per-channel symmetric KL is capped here before averaging, so a few channels that are
# (almost) dead on the target data cannot dominate a layer.
BN_CHANNEL_CAP = 10.0
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
# Summary score at or above which the data counts as "similar" in the four-case table.
SIMILAR_THRESHOLD = 0.5
# Probe settings for the per-layer profile: 3-fold CV on at most this many training images.
PROFILE_FOLDS = 3
PROFILE_MAX_SAMPLES = 2000


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
        return _clean(d)


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


def _clean(obj: Any) -> Any:
    """JSON-ready copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---------------------------------------------------------------------- BN statistics


def symmetric_kl_gaussian(m_t, v_t, m_s, v_s) -> np.ndarray:
    """Per-element symmetric KL divergence (mean of both directions) between N(m_t, v_t) and N(m_s, v_s)."""
    m_t, v_t, m_s, v_s = (np.asarray(a, dtype=np.float64) for a in (m_t, v_t, m_s, v_s))
    return 0.25 * (v_t / v_s + v_s / v_t - 2.0 + (m_t - m_s) ** 2 * (1.0 / v_t + 1.0 / v_s))


def _resolve(device: str, precision: str):
    """(torch.device, precision) as the feature store resolves them (bf16 where it is native)."""
    from ..runtime import resolve_device, resolve_precision

    dev = resolve_device(device)
    return dev, resolve_precision(precision, dev)


def _bn_groups(backbone) -> dict[int, str]:
    """id(BN module) -> parameter-group name (stem, stage1..N, top), via param_groups()."""
    import torch.nn as nn

    by_param: dict[int, str] = {}
    try:
        for name, params in backbone.param_groups():
            for p in params:
                by_param[id(p)] = name
    except Exception:  # a backbone without param_groups still gets one "all" group
        by_param = {}
    out = {}
    for module in backbone.model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            w = getattr(module, "weight", None)
            out[id(module)] = by_param.get(id(w), "other") if w is not None else "other"
    return out


def run_target_images(
    backbone: Backbone,
    images: np.ndarray,
    *,
    batch_size: int = 32,
    device: str = "auto",
    want_source: bool = True,
    layers: list[str] | None = None,
    features_out: dict[str, np.ndarray] | None = None,
    precision: str = "auto",
) -> tuple[list[dict[str, Any]] | None, np.ndarray | None, float]:
    """One pass of ``images`` (uint8 N,3,H,W) through the network in eval mode.

    Returns (per-BN-layer records or None when the network has no BatchNorm, source-head
    softmax probabilities (N, Z) or None, seconds per image). Each record: name, group,
    channels, divergence (mean capped symmetric KL between the batch statistics of the
    layer's input over all images and its running statistics).

    With ``layers`` and a ``features_out`` dict, the pooled features of those cut points are
    computed in the same pass and stored there (fp32), so a subsample needs no feature store.
    ``precision`` resolves as in the feature store (bf16 autocast where the hardware runs it
    natively); the statistics are accumulated in float64 either way.
    """
    import torch
    import torch.nn as nn

    from ..runtime import inference_context

    dev, prec = _resolve(device, precision)
    model = backbone.model
    was_training = model.training
    first = next(model.parameters(), None)
    orig_device = first.device if first is not None else torch.device("cpu")
    groups = _bn_groups(backbone)
    bns = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]
    acc: dict[str, list] = {name: [0.0, None, None] for name, _ in bns}  # count, sum, sumsq

    def make_hook(name):
        def hook(_module, args):
            x = args[0].detach()
            if x.dim() < 2:
                return
            dims = [d for d in range(x.dim()) if d != 1]
            x64 = x.double()
            cnt = x.numel() / x.shape[1]
            s = x64.sum(dim=dims)
            s2 = (x64 * x64).sum(dim=dims)
            rec = acc[name]
            rec[0] += cnt
            rec[1] = s if rec[1] is None else rec[1] + s
            rec[2] = s2 if rec[2] is None else rec[2] + s2

        return hook

    handles = [m.register_forward_pre_hook(make_hook(name)) for name, m in bns]
    probs = []
    feats: dict[str, list[np.ndarray]] = {name: [] for name in (layers or [])}
    want_source = want_source and bool(getattr(backbone, "has_source_head", False))
    t0 = time.perf_counter()
    try:
        model.eval()
        model.to(device=dev, memory_format=torch.channels_last)
        with inference_context(dev, prec):
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(np.array(images[start : start + batch_size], copy=True)).to(dev)
                x = x.contiguous(memory_format=torch.channels_last)
                # The same images twice (features, then source head) leave the BN means and
                # variances unchanged: sums and counts both double.
                if layers:
                    out = backbone.forward_layers(x, list(layers))
                    for name in layers:
                        feats[name].append(out[name].float().cpu().numpy())
                if want_source:
                    logits = backbone.source_logits(x)
                    probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
                elif not layers:
                    backbone.forward_layers(x, [backbone.cut_points[-1].name])
    finally:
        for h in handles:
            h.remove()
        model.to(device=orig_device, memory_format=torch.contiguous_format)
        model.train(was_training)
    per_image = (time.perf_counter() - t0) / max(len(images), 1)

    records = None
    if bns:
        records = []
        for name, m in bns:
            cnt, s, s2 = acc[name]
            if s is None or cnt == 0:
                continue
            mean = (s / cnt).cpu().numpy()
            var = np.clip((s2 / cnt).cpu().numpy() - mean**2, 0.0, None)
            eps = float(getattr(m, "eps", 1e-5))
            j = symmetric_kl_gaussian(
                mean, var + eps, m.running_mean.detach().cpu().numpy(), m.running_var.detach().cpu().numpy() + eps
            )
            j = np.minimum(np.nan_to_num(j, nan=BN_CHANNEL_CAP, posinf=BN_CHANNEL_CAP), BN_CHANNEL_CAP)
            records.append(
                {"name": name, "group": groups.get(id(m), "other"), "channels": int(mean.size),
                 "divergence": float(j.mean())}
            )
    source_probs = np.concatenate(probs) if probs else None
    if features_out is not None:
        for name, parts in feats.items():
            features_out[name] = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return records, source_probs, per_image


def bn_group_divergence(records: list[dict[str, Any]], group_order: list[str]) -> dict[str, float]:
    """Mean divergence per parameter group, in ``group_order`` (then any other group)."""
    by_group: dict[str, list[float]] = {}
    for r in records:
        by_group.setdefault(r["group"], []).append(r["divergence"])
    order = [g for g in group_order if g in by_group] + [g for g in by_group if g not in group_order]
    return {g: float(np.mean(by_group[g])) for g in order}


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
            bn_value = float(np.exp(-np.mean(list(div.values())) / BN_SCALE))
        else:
            notes.append(
                f"{backbone.name} has no BatchNorm layers: the BN-statistics signal is unavailable."
            )
        if probs is not None and image_labels is not None:
            leep_v = tr.leep(probs, image_labels)
            nleep = tr.normalized_leep(probs, image_labels)
            ent = tr.source_entropy(probs)
            mi = tr.source_mutual_information(probs)
            source_value = float(np.nanmean([nleep, 1.0 - ent, min(1.0, mi / MI_REF)]))
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
    return tr._stratified_subsample(np.asarray(labels), n, seed)


def similarity_of_subset(
    dataset, backbone: Backbone, *, n_images: int = BN_MAX_IMAGES, device: str = "auto", seed: int = 0
) -> Similarity:
    """All three signals from one stratified subsample (<= ``n_images``) of the training split,
    with the probe profile computed on that subsample's features from the same pass (no feature
    store). Cheaper and noisier than ``advise``; for quick checks and the acceptance tests."""
    from .plan import _train_mask

    mask = _train_mask(dataset)
    train_idx = np.flatnonzero(mask)
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
