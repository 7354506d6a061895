"""The plan: which transfer strategy, cut where, how many stages frozen, for how many epochs.

``advise(dataset, backbone, store_dir=...)`` measures the training split only (never val or
test labels, never test images for anything but the shared feature-store pass):

1. one forward pass of the whole dataset at every cut point into the feature store (the same
   store entries the feature-based strategies reuse, so trying them afterwards is free);
2. size: counts per class and a learning curve of the linear probe (``size.py``);
3. similarity to the source data: BatchNorm statistics, per-layer probe profile, source head
   (``similarity.py``);
4. a decision from those numbers (``rules.py``), with the reasons as sentences, and beside it
   what the plain four-case table (size x similarity) would say.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.roles import duplicate_ids, train_mask
from ..runtime import CacheLayout
from ..strategies import strategy_class
from . import similarity as sim_mod
from . import transferability as tr
from ._json import json_ready
from .rules import FINETUNE_EPOCHS, decide, finetune_epochs, table_answer
from .similarity import Similarity
from .size import SizeProfile, measure_size

if TYPE_CHECKING:  # pragma: no cover
    from ..backbones import Backbone
    from ..data import ImageDataset
    from ..data.roles import Roles


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
    # The settings the advisor chose for the strategy (checked against its declared parameters).
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def agrees_with_table(self) -> bool:
        return self.strategy == self.table_strategy

    def strategy_params(self) -> dict[str, Any]:
        """Parameters for ``get_strategy(self.strategy)`` / ``TransferClassifier``: the settings the
        advisor chose, each one declared by the strategy (its defaults supply the rest)."""
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in self.params.items()}
        strategy_class(self.strategy).check_params(params, "The advisor")
        return params

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; keys strategy, layer, frozen_stages, similarity, size, table_rule,
        reasons, plus hidden, lr, body_lr_ratio, epochs, table_strategy, agrees_with_table,
        params (for the strategy), backbone, dataset, cost, cost_seconds."""
        return json_ready(
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
        on_features = strategy_class(self.strategy).uses_feature_store
        if self.layer and on_features:
            what += f" at {self.layer}"
        if self.hidden:
            what += f", hidden {'x'.join(map(str, self.hidden))}"
        if self.frozen_stages is not None:
            what += f", stem + {self.frozen_stages} stage(s) frozen"
        if not on_features:
            ratio = "" if self.body_lr_ratio is None else f", body lr x{self.body_lr_ratio:g}"
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


# ------------------------------------------------------------------------------ advise


def _extract(backbone, dataset, layers, *, store_dir, device, progress):
    """Features of the whole dataset at ``layers`` from the feature store (indirection for tests)."""
    from ..features import extract_features

    return extract_features(backbone, dataset, layers, store_dir=store_dir, device=device, progress=progress)


def _subsample_images(dataset, train_idx: np.ndarray, labels: np.ndarray, backbone, store_dir, seed):
    """uint8 images of a stratified subsample (<= BN_MAX_IMAGES) of the training split, and labels."""
    pick = train_idx[sim_mod.subsample_indices(labels[train_idx], sim_mod.BN_MAX_IMAGES, seed)]
    pre = backbone.preprocessing
    size = tuple(pre.input_size[1:])
    cache_dir = CacheLayout.from_store_dir(store_dir).decoded  # where the strategies cache decoded images
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
    from ..strategies._probe import best_layer_of

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
    roles: Roles | None = None,
) -> Advice:
    """Measure ``dataset``'s training images against ``backbone`` and return the plan (:class:`Advice`).

    The training images are ``roles.train`` when ``roles`` is given (``fit`` passes its own, so the
    advisor measures exactly the images the strategy will train on), else the ``train`` split.

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
    mask = train_mask(dataset, roles)
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
                        layer=curve_layer, seed=seed, group_ids=duplicate_ids(dataset)[mask])
    cost["size_seconds"] = round(time.perf_counter() - t2, 3)

    stages = [g for g, _ in sim_mod._safe_param_groups(backbone) if g.startswith("stage")]
    if not stages:
        stages = [n for n in layers if n.startswith("stage")]
    plan = decide(size, similarity, stages=stages, knn_last=knn_last, probe_last=probe_last)
    if plan["strategy"] == "intermediate" and plan["layer"] is None:
        t3 = time.perf_counter()
        plan["layer"] = _cut_by_cv(feats, y, len(dataset.classes), seed, plan["reasons"]) or last
        plan["params"]["layer"] = plan["layer"]
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
        ft_epochs = finetune_epochs(len(y), FINETUNE_EPOCHS)
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
        params=plan["params"],
    )
