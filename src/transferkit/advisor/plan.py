"""The plan: which transfer strategy, cut where, how many stages frozen, which learning rates.

``advise(dataset, backbone, store_dir=...)`` measures the training split only (never val or
test labels, never test images for anything but the shared feature-store pass):

1. one forward pass of the whole dataset at every cut point into the feature store (the same
   store entries the feature-based strategies reuse, so trying them afterwards is free);
2. size: counts per class and a learning curve of the linear probe (``size.py``);
3. similarity to the source data: BatchNorm statistics, per-layer probe profile, source head
   (``similarity.py``);
4. a decision from those numbers, with the reasons as sentences, and beside it what the
   plain four-case table (size x similarity) would say.

The four-case table (``table_rule``): *small* when the median training images per class is
below ``SMALL_PER_CLASS`` or the training split has fewer than ``SMALL_TOTAL`` images;
*similar* when the similarity score is at least ``similarity.SIMILAR_THRESHOLD``.
small & similar -> linear; small & different -> intermediate; large & similar -> partial;
large & different -> full (scratch when the similarity is below ``SCRATCH_MAX_SIMILARITY``).

The measured decision departs from the table where the measurements say so:

- an earlier cut point whose probe beats the last one by more than ``INTERMEDIATE_MARGIN``
  -> ``intermediate`` at that layer (small data), whatever the similarity score says;
- small data whose last-layer probe does not lose to an earlier layer -> ``linear``, or
  ``hidden`` when kNN beats the linear probe by more than ``HIDDEN_MARGIN`` (classes are
  clustered but not linearly separable in the CNN codes: a nonlinear head helps); when the
  data is *different*, ``intermediate`` with the cut chosen by the linear strategy's own
  cross-validation over every cut point (the last included): the quick profile cannot rank
  layers a few points apart, so the table's prior stands (mnist_t10k at 10 per class: the CV-chosen
  cut 89.7% against 85.7% for the final codes, benchmarks/advisor.py);
- large & similar -> ``partial``; the number of frozen stages is the run of leading stages
  whose BN similarity is at least ``FREEZE_BN_MIN`` (their inputs look like the source's,
  so their filters need not change), capped at half the stages; one fewer when the learning
  curve is still steep (more data to adapt with);
- large & different -> ``full`` from the pretrained weights with a larger body learning
  rate; ``scratch`` only when the similarity is very low *and* there are at least
  ``SCRATCH_MIN_PER_CLASS`` images per class;
- a flat learning curve with small data keeps the probe strategy; a steep one on data that
  is not small is an argument for fine-tuning and is stated as a reason.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.roles import train_mask
from . import similarity as sim_mod
from . import transferability as tr
from ._json import json_ready as _clean
from .similarity import Similarity
from .size import SizeProfile, measure_size

if TYPE_CHECKING:  # pragma: no cover
    from ..backbones import Backbone
    from ..data import ImageDataset

# --------------------------------------------------------------------------- thresholds

# Four-case table. "Small" is where fixed features are hard to beat: Yosinski et al. 2014 and
# Kornblith et al. 2019 see fine-tuning pull clearly ahead of probes only from a few hundred
# images per class; 150 per class / 1000 in all sits at the low end of that range.
SMALL_PER_CLASS = 150
SMALL_TOTAL = 1000
# An intermediate layer must beat the last layer's probe by more than this (accuracy, 0..1).
INTERMEDIATE_MARGIN = 0.02
# kNN accuracy above linear-probe accuracy by more than this suggests a nonlinear head.
HIDDEN_MARGIN = 0.02
HIDDEN_UNITS = (512,)
# Leading stages with BN similarity at least this are frozen for `partial`.
FREEZE_BN_MIN = 0.7
# Below this similarity and with at least this many images per class: train from scratch.
SCRATCH_MAX_SIMILARITY = 0.2
SCRATCH_MIN_PER_CLASS = 1000
# Learning-curve slope (accuracy per doubling) that counts as "steep".
STEEP_SLOPE = 0.03

# Learning rates (AdamW, as the engine's default): head lr, and the body's as a ratio of it.
HEAD_LR = 1e-3
BODY_LR_RATIO_SIMILAR = 0.1  # pretrained features are nearly right: move them gently
# Different data was first given a larger ratio (0.3, "the body has to move further"); measured on
# mnist_t10k at 500 per class (benchmarks/advisor.py, 5 epochs) it scored 94.2% against 96.8% for
# 0.1, and on flowers5 a body lr of 1e-4 already knocks the probe-started network down in the first
# epoch. So both cases use 0.1 until a task shows otherwise.
BODY_LR_RATIO_DIFFERENT = 0.1
# Epochs: about FINETUNE_IMAGES_SEEN training images seen in total, clipped to [min, max].
FINETUNE_IMAGES_SEEN = 100_000
FINETUNE_EPOCHS = (5, 30)
SCRATCH_EPOCHS = (20, 100)
HEAD_EPOCHS = 100  # `hidden`: epochs of the small head on stored features

STRATEGIES = ("linear", "intermediate", "hidden", "partial", "full", "scratch")


@dataclass
class Advice:
    """The advisor's plan and the measurements behind it (see the module docstring)."""

    strategy: str
    layer: str | None
    frozen_stages: int | None
    hidden: tuple[int, ...]
    lr: float | None
    body_lr_ratio: float | None
    epochs: int | None
    similarity: Similarity
    size: SizeProfile
    table_rule: str  # the plain four-case table's answer, e.g. "small & similar -> linear"
    table_strategy: str
    reasons: list[str]
    backbone: str = ""
    weights_hash: str = ""
    dataset: str = ""
    fingerprint: str = ""
    cost: dict[str, Any] = field(default_factory=dict)
    cost_seconds: float = 0.0

    @property
    def agrees_with_table(self) -> bool:
        return self.strategy == self.table_strategy

    def strategy_params(self) -> dict[str, Any]:
        """Parameters for ``get_strategy(self.strategy)`` / ``TransferClassifier`` (engine names)."""
        p: dict[str, Any] = {}
        if self.strategy in ("linear", "intermediate", "hidden"):
            if self.layer is not None:
                p["layer"] = self.layer
            if self.hidden:
                p["hidden"] = tuple(self.hidden)
            if self.strategy == "hidden" and self.epochs:
                p["epochs"] = self.epochs
            if self.strategy == "hidden" and self.lr is not None:
                p["lr"] = self.lr
            return p
        if self.lr is not None:
            p["lr"] = self.lr
        if self.epochs is not None:
            p["epochs"] = self.epochs
        if self.strategy in ("partial", "full") and self.body_lr_ratio is not None:
            p["body_lr_ratio"] = self.body_lr_ratio
        if self.strategy == "partial" and self.frozen_stages is not None:
            p["freeze_stages"] = self.frozen_stages
        return p

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; keys strategy, layer, frozen_stages, similarity, size, table_rule,
        reasons, plus hidden, lr, body_lr_ratio, epochs, table_strategy, agrees_with_table,
        params (for the strategy), backbone, dataset, cost, cost_seconds."""
        return _clean(
            {
                "strategy": self.strategy,
                "layer": self.layer,
                "frozen_stages": self.frozen_stages,
                "hidden": list(self.hidden),
                "lr": self.lr,
                "body_lr_ratio": self.body_lr_ratio,
                "epochs": self.epochs,
                "similarity": self.similarity.to_dict(),
                "size": self.size.to_dict(),
                "table_rule": self.table_rule,
                "table_strategy": self.table_strategy,
                "agrees_with_table": self.agrees_with_table,
                "reasons": list(self.reasons),
                "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.strategy_params().items()},
                "backbone": self.backbone,
                "weights_hash": self.weights_hash,
                "dataset": self.dataset,
                "fingerprint": self.fingerprint,
                "cost": self.cost,
                "cost_seconds": self.cost_seconds,
            }
        )

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the CLI (no colours, no table widths)."""
        what = self.strategy
        if self.layer and self.strategy in ("intermediate", "linear", "hidden"):
            what += f" at {self.layer}"
        if self.hidden:
            what += f", hidden {'x'.join(map(str, self.hidden))}"
        if self.strategy == "partial":
            what += f", stem + {self.frozen_stages} stage(s) frozen"
        if self.strategy in ("partial", "full", "scratch"):
            ratio = "" if self.body_lr_ratio is None or self.strategy == "scratch" else (
                f", body lr x{self.body_lr_ratio:g}"
            )
            what += f", lr {self.lr:g}{ratio}, {self.epochs} epochs"
        s, z = self.similarity, self.size
        lines = [
            f"Advice: {what}",
            f"Data: {z.n_train} training images, {z.n_classes} classes "
            f"(min {z.min_per_class}, median {z.median_per_class:g} per class, imbalance {z.imbalance:.1f}x)",
            "Similarity to the source data: "
            f"{s.score:.2f} ({'similar' if s.similar else 'different'}); "
            + ", ".join(f"{k} {v:.2f}" for k, v in s.signals.items() if v is not None),
        ]
        if z.slope_per_doubling is not None:
            lines.append(z.sentence())
        lines.append(
            f"Four-case table: {self.table_rule}"
            + ("" if self.agrees_with_table else f" (the measurements say {self.strategy} instead)")
        )
        lines.append("Why:")
        lines += [f"  - {r}" for r in self.reasons]
        lines.append(f"Measured in {self.cost_seconds:.1f} s" + (
            f" (about {100 * self.cost['ratio_to_full_finetune']:.0f}% of an estimated full fine-tune)"
            if self.cost.get("ratio_to_full_finetune") is not None else ""
        ))
        return lines


# ------------------------------------------------------------------------- the decision


def is_small(size: SizeProfile) -> bool:
    return size.median_per_class < SMALL_PER_CLASS or size.n_train < SMALL_TOTAL


def table_answer(size: SizeProfile, similarity: Similarity) -> tuple[str, str]:
    """(rule sentence, strategy) of the plain four-case table."""
    small = is_small(size)
    similar = similarity.similar
    if small:
        strategy = "linear" if similar else "intermediate"
    elif similar:
        strategy = "partial"
    else:
        strategy = "scratch" if similarity.score < SCRATCH_MAX_SIMILARITY else "full"
    case = f"{'small' if small else 'large'} & {'similar' if similar else 'different'}"
    return f"{case} -> {strategy}", strategy


def _epochs(n_train: int, bounds: tuple[int, int]) -> int:
    return int(np.clip(round(FINETUNE_IMAGES_SEEN / max(n_train, 1)), *bounds))


def decide(
    size: SizeProfile,
    similarity: Similarity,
    *,
    stages: list[str],
    knn_last: float | None = None,
    probe_last: float | None = None,
) -> dict[str, Any]:
    """The plan from the measurements: strategy, layer, frozen_stages, hidden, lr, ratio, epochs, reasons.

    ``stages``: the backbone's stage group names in order (stage1..N) for the frozen count.
    """
    reasons: list[str] = []
    small = is_small(size)
    s = similarity
    profile = s.probe_profile()
    last = s.last_layer
    a_last = profile.get(last) if last else None
    # The candidate cut: the best non-stem cut point (the stem's pooled codes are colour/edge
    # statistics; the intermediate strategy never cuts there either).
    candidates = {k: v for k, v in profile.items() if k != "stem" and v is not None and np.isfinite(v)}
    best = max(candidates, key=candidates.get) if candidates else last
    a_best = candidates.get(best) if best else None
    gap = (a_best - a_last) if (a_best is not None and a_last is not None) else 0.0

    per_class = f"median {size.median_per_class:g} / min {size.min_per_class} training images per class"
    reasons.append(
        f"Size: {size.n_train} training images in {size.n_classes} classes ({per_class}, "
        f"imbalance {size.imbalance:.1f}x): {'small' if small else 'large'} "
        f"(small means median < {SMALL_PER_CLASS} per class or < {SMALL_TOTAL} in all)."
    )
    sig_txt = ", ".join(f"{k} {v:.2f}" for k, v in s.signals.items() if v is not None)
    reasons.append(
        f"Similarity to the source data: {s.score:.2f} ({sig_txt}); "
        f"{'similar' if s.similar else 'different'} (threshold {sim_mod.SIMILAR_THRESHOLD})."
    )
    if a_last is not None and best is not None:
        if best != last and gap > INTERMEDIATE_MARGIN:
            reasons.append(
                f"The probe at {best} ({100 * a_best:.1f}%) beats the last layer {last} "
                f"({100 * a_last:.1f}%) by {100 * gap:.1f} points: the top layers are too source-specific."
            )
        else:
            reasons.append(
                f"The last layer {last} gives the best probe ({100 * a_last:.1f}%"
                + (f"; best earlier layer {best} {100 * a_best:.1f}%" if best != last else "")
                + "): depth keeps paying off."
            )
    slope = size.slope_per_doubling
    if slope is not None and np.isfinite(slope):
        reasons.append(size.sentence())

    hidden: tuple[int, ...] = ()
    layer: str | None = None
    frozen: int | None = None
    lr: float | None = None
    ratio: float | None = None
    epochs: int | None = None

    if small:
        if best is not None and best != last and gap > INTERMEDIATE_MARGIN:
            strategy, layer = "intermediate", best
            reasons.append(f"Small data: train a classifier on the frozen {best} activations.")
        elif (
            knn_last is not None and probe_last is not None and np.isfinite(knn_last)
            and knn_last - probe_last > HIDDEN_MARGIN
        ):
            strategy, layer, hidden = "hidden", last, HIDDEN_UNITS
            lr, epochs = HEAD_LR, HEAD_EPOCHS
            reasons.append(
                f"Small data, and kNN on the {last} codes ({100 * knn_last:.1f}%) beats the linear probe "
                f"({100 * probe_last:.1f}%) by more than {100 * HIDDEN_MARGIN:.0f} points: the classes "
                f"are clustered but not linearly separable, so hidden layer(s) {HIDDEN_UNITS} on the "
                "frozen network."
            )
        elif not s.similar:
            # No earlier layer wins clearly, but the quick profile (3-fold, one L2 strength) cannot
            # tell layers a few points apart either; for data unlike the source the table's prior
            # (cut earlier) stands, and the cut is chosen by the linear strategy's own
            # cross-validation over every cut point, the last included (advise() fills it in).
            strategy, layer = "intermediate", None
            reasons.append(
                "Small data unlike the source: a classifier on frozen activations, the cut point "
                "chosen by cross-validated probe accuracy over every cut point (the last included)."
            )
        else:
            strategy, layer = "linear", last
            reasons.append(
                "Small data: a linear classifier on the frozen CNN codes; fine-tuning this few images "
                "risks overfitting for little gain."
            )
    else:
        steep = slope is not None and np.isfinite(slope) and slope >= STEEP_SLOPE
        if s.similar:
            strategy = "partial"
            stage_sims = [
                (s.layer(g).bn_similarity if s.layer(g) is not None else None) for g in stages
            ]
            frozen = 0
            for v in stage_sims:
                if v is None or v < FREEZE_BN_MIN:
                    break
                frozen += 1
            cap = max(0, len(stages) // 2)
            capped = min(frozen, cap)
            if steep and capped > 0:
                capped -= 1
            frozen_txt = ", ".join(
                f"{g} {v:.2f}" for g, v in zip(stages, stage_sims, strict=True) if v is not None
            )
            reasons.append(
                f"Large & similar: fine-tune with a smaller body learning rate; freeze the stem and the "
                f"first {capped} stage(s): BN similarity per stage {frozen_txt} (frozen while >= "
                f"{FREEZE_BN_MIN}, at most {cap} of {len(stages)}"
                + ("; one fewer because the learning curve is still steep" if steep and frozen else "")
                + ")."
            )
            frozen = capped
            lr, ratio, epochs = HEAD_LR, BODY_LR_RATIO_SIMILAR, _epochs(size.n_train, FINETUNE_EPOCHS)
        elif s.score < SCRATCH_MAX_SIMILARITY and size.median_per_class >= SCRATCH_MIN_PER_CLASS:
            strategy = "scratch"
            lr, ratio, epochs = HEAD_LR, 1.0, _epochs(size.n_train, SCRATCH_EPOCHS)
            reasons.append(
                f"Large & very different (similarity {s.score:.2f} < {SCRATCH_MAX_SIMILARITY}) with "
                f"{size.median_per_class:g} images per class: train from scratch."
            )
        else:
            strategy = "full"
            lr, ratio, epochs = HEAD_LR, BODY_LR_RATIO_DIFFERENT, _epochs(size.n_train, FINETUNE_EPOCHS)
            reasons.append(
                "Large & different: fine-tune every layer from the pretrained weights (a better start "
                f"than random init), the body at x{BODY_LR_RATIO_DIFFERENT} the head's learning rate."
            )
        if steep:
            reasons.append(
                f"The probe still gains {100 * slope:.1f} points per doubling of the data: the frozen "
                "features have not saturated, another argument for fine-tuning."
            )
    return {
        "strategy": strategy,
        "layer": layer,
        "frozen_stages": frozen,
        "hidden": hidden,
        "lr": lr,
        "body_lr_ratio": ratio,
        "epochs": epochs,
        "reasons": reasons,
    }


# ------------------------------------------------------------------------------ advise


def _extract(backbone, dataset, layers, *, store_dir, device, progress):
    """Features of the whole dataset at ``layers`` from the feature store (indirection for tests)."""
    from ..features import extract_features

    return extract_features(backbone, dataset, layers, store_dir=store_dir, device=device, progress=progress)


def _train_mask(dataset) -> np.ndarray:
    splits = np.asarray(dataset.splits)
    mask = splits == "train"
    if not mask.any():
        from ..errors import DataError

        present = sorted(set(splits.tolist()))
        raise DataError(
            f"Dataset {dataset.name!r} has no 'train' split (splits present: {present}); the advisor "
            "measures the training split only. Load it with load_dataset(..., test_fraction=...) to make one."
        )
    return mask


def _subsample_images(dataset, train_idx: np.ndarray, labels: np.ndarray, backbone, store_dir, seed):
    """uint8 images of a stratified subsample (<= BN_MAX_IMAGES) of the training split, and labels."""
    pick = train_idx[sim_mod.subsample_indices(labels[train_idx], sim_mod.BN_MAX_IMAGES, seed)]
    pre = backbone.preprocessing
    size = tuple(pre.input_size[1:])
    cache_dir = Path(store_dir).parent / "decoded"  # where the strategies cache the decoded images
    full_cache = None
    try:
        full_cache = dataset.cache_path(cache_dir, size, pre.interpolation)
    except Exception:  # a dataset without cache_path: decode the subsample
        full_cache = None
    if full_cache is not None and Path(full_cache).is_file():
        images = np.asarray(dataset.decode(size, pre.interpolation, cache_dir)[pick])
    else:
        images = np.asarray(dataset.subset(pick).decode(size, pre.interpolation))
    return np.ascontiguousarray(images), labels[pick]


def _cut_by_cv(feats: dict[str, np.ndarray], y: np.ndarray, num_classes: int, seed: int,
               reasons: list[str]) -> str | None:
    """The intermediate strategy's own choice of cut (CV probe per cut point, stem excluded), with
    the numbers added to ``reasons``; None when the probe cannot be cross-validated here."""
    from ..errors import ConfigError
    from ..strategies.linear import best_layer_of

    candidates = {k: v for k, v in feats.items() if k != "stem"}
    try:
        layer, profile = best_layer_of(candidates, y, num_classes, seed)
    except ConfigError as exc:  # e.g. a class with a single training image
        reasons.append(f"The cut could not be cross-validated ({exc}); the last layer is used.")
        return None
    scores = ", ".join(f"{k} {100 * v:.1f}%" for k, v in profile.items())
    reasons.append(f"Cross-validated probe accuracy per cut point: {scores}; cut at {layer}.")
    return layer


def advise(
    dataset: ImageDataset,
    backbone: Backbone,
    *,
    store_dir: str | Path,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> Advice:
    """Measure ``dataset``'s training split against ``backbone`` and return the plan (:class:`Advice`).

    Cost: one forward pass of the dataset into the feature store (free when the store already
    holds it), one forward pass of at most ``similarity.BN_MAX_IMAGES`` training images for the
    BatchNorm and source-head signals, and a few dozen logistic-regression fits on stored features.
    """
    t0 = time.perf_counter()
    cost: dict[str, Any] = {}
    layers = [cp.name for cp in backbone.cut_points]
    fs = _extract(backbone, dataset, layers, store_dir=store_dir, device=device, progress=progress)
    cost["features_seconds"] = round(time.perf_counter() - t0, 3)
    cost["features_from_cache"] = bool(getattr(fs, "from_cache", False))

    labels = np.asarray(dataset.labels)
    mask = train_mask(dataset)
    train_idx = np.flatnonzero(mask)
    feats = {layer: np.asarray(fs.features[layer])[mask] for layer in layers}
    y = labels[mask]

    t1 = time.perf_counter()
    images, image_labels = _subsample_images(dataset, train_idx, labels, backbone, store_dir, seed)
    cost["decode_subsample_seconds"] = round(time.perf_counter() - t1, 3)
    similarity = sim_mod.measure_similarity(
        backbone, features=feats, labels=y, images=images, image_labels=image_labels, device=device, seed=seed
    )
    cost["similarity_seconds"] = round(similarity.seconds, 3)
    per_image = similarity.forward_seconds_per_image

    last = similarity.last_layer or layers[-1]
    t2 = time.perf_counter()
    knn_last = tr.knn_accuracy(feats[last], y, k=10) if len(y) > 10 else None
    probe_last = similarity.probe_profile().get(last)
    curve_layer = similarity.best_layer if similarity.best_layer not in (None, "stem") else last
    size = measure_size(y, list(dataset.classes), len(dataset), features=feats[curve_layer],
                        layer=curve_layer, seed=seed)
    cost["size_seconds"] = round(time.perf_counter() - t2, 3)

    stages = [g for g, _ in sim_mod._safe_param_groups(backbone) if g.startswith("stage")]
    if not stages:
        stages = [n for n in layers if n.startswith("stage")]
    plan = decide(size, similarity, stages=stages, knn_last=knn_last, probe_last=probe_last)
    if plan["strategy"] == "intermediate" and plan["layer"] is None:
        t3 = time.perf_counter()
        plan["layer"] = _cut_by_cv(feats, y, len(dataset.classes), seed, plan["reasons"]) or last
        cost["cut_cv_seconds"] = round(time.perf_counter() - t3, 3)
    rule, table_strategy = table_answer(size, similarity)
    if plan["strategy"] != table_strategy:
        plan["reasons"].append(
            f"The plain four-case table says {table_strategy} ({rule}); the measurements above "
            f"point to {plan['strategy']}."
        )
    total = time.perf_counter() - t0
    cost["total_seconds"] = round(total, 3)
    if per_image is not None and math.isfinite(per_image):
        # A full fine-tune: forward + backward (~3x a forward pass) over the training split for
        # the epochs a fine-tune of this data would get.
        ft_epochs = _epochs(len(y), FINETUNE_EPOCHS)
        est = 3.0 * per_image * len(y) * ft_epochs
        cost["forward_seconds_per_image"] = round(per_image, 5)
        cost["estimated_full_finetune_seconds"] = round(est, 1)
        cost["estimated_full_finetune_epochs"] = ft_epochs
        cost["ratio_to_full_finetune"] = round(total / est, 4) if est > 0 else None
    return Advice(
        strategy=plan["strategy"],
        layer=plan["layer"],
        frozen_stages=plan["frozen_stages"],
        hidden=tuple(plan["hidden"]),
        lr=plan["lr"],
        body_lr_ratio=plan["body_lr_ratio"],
        epochs=plan["epochs"],
        similarity=similarity,
        size=size,
        table_rule=rule,
        table_strategy=table_strategy,
        reasons=plan["reasons"],
        backbone=str(getattr(backbone, "name", "")),
        weights_hash=str(getattr(backbone, "weights_hash", "")),
        dataset=str(getattr(dataset, "name", "")),
        fingerprint=str(getattr(dataset, "fingerprint", "")),
        cost=cost,
        cost_seconds=round(total, 3),
    )
