"""The decision: from the measurements (size, similarity, probe profile) to a strategy and its settings.

Pure functions of the measurements, no I/O. ``decide`` returns the plan with its reasons and
``table_answer`` what the plain four-case table says. The advisor chooses only what the
measurements speak to (the cut point, the frozen stages, the epochs); it checks those settings
against the chosen strategy's declared parameters, and everything else (learning rates, head
widths) is the strategy's own default, read from the registry.

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
- large & different -> ``full`` from the pretrained weights; ``scratch`` only when the
  similarity is very low *and* there are at least ``SCRATCH_MIN_PER_CLASS`` images per class;
- a flat learning curve with small data keeps the probe strategy; a steep one on data that
  is not small is an argument for fine-tuning and is stated as a reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..strategies import strategy_class
from .similarity import SIMILAR_THRESHOLD, Similarity
from .size import SizeProfile

# Four-case table. "Small" is where fixed features are hard to beat: Yosinski et al. 2014 and
# Kornblith et al. 2019 see fine-tuning pull clearly ahead of probes only from a few hundred
# images per class; 150 per class / 1000 in all sits at the low end of that range.
SMALL_PER_CLASS = 150
SMALL_TOTAL = 1000
# An intermediate layer must beat the last layer's probe by more than this (accuracy, 0..1).
INTERMEDIATE_MARGIN = 0.02
# kNN accuracy above linear-probe accuracy by more than this suggests a nonlinear head.
HIDDEN_MARGIN = 0.02
# Leading stages with BN similarity at least this are frozen for `partial`.
FREEZE_BN_MIN = 0.7
# Below this similarity and with at least this many images per class: train from scratch.
SCRATCH_MAX_SIMILARITY = 0.2
SCRATCH_MIN_PER_CLASS = 1000
# Learning-curve slope (accuracy per doubling) that counts as "steep".
STEEP_SLOPE = 0.03

# Epochs: about FINETUNE_IMAGES_SEEN training images seen in total, clipped to [min, max].
FINETUNE_IMAGES_SEEN = 100_000
FINETUNE_EPOCHS = (5, 30)
SCRATCH_EPOCHS = (20, 100)




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


def finetune_epochs(n_train: int, bounds: tuple[int, int] = FINETUNE_EPOCHS) -> int:
    """About ``FINETUNE_IMAGES_SEEN`` images seen in all, clipped to ``bounds``."""
    return int(np.clip(round(FINETUNE_IMAGES_SEEN / max(n_train, 1)), *bounds))


def decide(
    size: SizeProfile,
    similarity: Similarity,
    *,
    stages: list[str],
    knn_last: float | None = None,
    probe_last: float | None = None,
) -> dict[str, Any]:
    """The plan from the measurements: strategy, params (the settings the advisor chose, checked
    against the strategy's declared parameters), reasons, and for display the effective layer,
    frozen_stages, hidden, lr, body_lr_ratio and epochs (the chosen settings over the defaults).

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
        f"{'similar' if s.similar else 'different'} (threshold {SIMILAR_THRESHOLD})."
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

    layer: str | None = None
    frozen: int | None = None
    epochs: int | None = None

    if small:
        if best is not None and best != last and gap > INTERMEDIATE_MARGIN:
            strategy, layer = "intermediate", best
            reasons.append(f"Small data: train a classifier on the frozen {best} activations.")
        elif (
            knn_last is not None and probe_last is not None and np.isfinite(knn_last)
            and knn_last - probe_last > HIDDEN_MARGIN
        ):
            strategy = "hidden"
            reasons.append(
                f"Small data, and kNN on the {last} codes ({100 * knn_last:.1f}%) beats the linear probe "
                f"({100 * probe_last:.1f}%) by more than {100 * HIDDEN_MARGIN:.0f} points: the classes "
                f"are clustered but not linearly separable, so hidden layer(s) on the "
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
            epochs = finetune_epochs(size.n_train)
        elif s.score < SCRATCH_MAX_SIMILARITY and size.median_per_class >= SCRATCH_MIN_PER_CLASS:
            strategy = "scratch"
            epochs = finetune_epochs(size.n_train, SCRATCH_EPOCHS)
            reasons.append(
                f"Large & very different (similarity {s.score:.2f} < {SCRATCH_MAX_SIMILARITY}) with "
                f"{size.median_per_class:g} images per class: train from scratch."
            )
        else:
            strategy = "full"
            epochs = finetune_epochs(size.n_train)
            reasons.append(
                "Large & different: fine-tune every layer from the pretrained weights (a better start "
                "than random init), the body at a fraction of the head's learning rate."
            )
        if steep:
            reasons.append(
                f"The probe still gains {100 * slope:.1f} points per doubling of the data: the frozen "
                "features have not saturated, another argument for fine-tuning."
            )
    return plan_of(strategy, {"layer": layer, "freeze_stages": frozen, "epochs": epochs}, reasons)


def plan_of(strategy: str, chosen: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    """The plan dict for ``strategy`` with the ``chosen`` settings that are not None.

    The settings are checked against the strategy's declared parameters (a ConfigError names any
    it does not declare: an advisor bug, never silently dropped); the display fields show the
    effective values, the chosen settings over the strategy's defaults.
    """
    cls = strategy_class(strategy)
    params = {k: v for k, v in chosen.items() if v is not None}
    cls.check_params(params, "The advisor")
    effective = {**cls.defaults, **params}
    return {
        "strategy": strategy,
        "params": params,
        "layer": params.get("layer"),
        "frozen_stages": params.get("freeze_stages"),
        "hidden": tuple(effective.get("hidden") or ()),
        "lr": effective.get("lr"),
        "body_lr_ratio": effective.get("body_lr_ratio") if cls.pretrained else None,
        "epochs": effective.get("epochs"),
        "reasons": reasons,
    }
