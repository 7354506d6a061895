"""Strategies that keep the whole backbone frozen and train on stored features.

- ``linear`` (small & similar data): multinomial logistic regression on the final CNN codes
  (the pooled output), L2 strength chosen by cross-validation on the training data over a
  log-spaced grid, as in Kornblith et al. 2019, "Do Better ImageNet Models Transfer Better?".
- ``intermediate`` (small & different data): the same, or a small MLP, on the pooled
  activations of an earlier cut point (``layer="stage3"``); with no layer given, the layer
  with the best cross-validated probe accuracy on the training data is used.

Both read features from the feature store, so trying them costs one forward pass in total.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold

from ..errors import ConfigError
from .base import FitContext, Strategy
from .feature_model import FeatureModel, standardiser

# Inverse L2 strengths searched by cross-validation. Kornblith et al. search 1e-6..1e5 on
# raw features; on standardised features the optimum for 1e2..1e5 images lies well inside this.
C_GRID = np.logspace(-5, 2, 15)


def stored_features(ctx: FitContext, layers: list[str], pool: str | int = "avg"):
    """Features of every image of ``ctx.dataset`` at ``layers``, from the store (one pass if missing)."""
    from ..features import extract_features

    return extract_features(ctx.backbone, ctx.dataset, layers, store_dir=ctx.store_dir, device=ctx.device,
                            precision=ctx.precision, pool=pool, progress=ctx.progress)


def learnable_indices(ctx: FitContext) -> np.ndarray:
    """Every image a feature-based strategy may learn from: train plus the selection split.

    These strategies select their regularisation by cross-validation inside this set, so the
    separate selection split would only waste labelled images.
    """
    parts = [ctx.train_idx] + ([ctx.val_idx] if ctx.val_idx is not None else [])
    return np.sort(np.concatenate(parts))


def cv_folds(y: np.ndarray, seed: int, max_folds: int = 5) -> StratifiedKFold:
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min()) if len(y) else 0
    folds = min(max_folds, smallest)
    if folds < 2:
        raise ConfigError(
            f"Cross-validation needs at least 2 training images in every class; the smallest class has "
            f"{smallest}. Add images to that class or drop it."
        )
    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int) -> tuple[torch.nn.Linear, dict]:
    """Cross-validated multinomial logistic regression on standardised ``x``, as a torch Linear layer."""
    present = np.unique(y)
    clf = LogisticRegressionCV(Cs=C_GRID, l1_ratios=(0.0,), cv=cv_folds(y, seed), scoring="accuracy",
                               max_iter=2000, use_legacy_attributes=False, random_state=seed)
    clf.fit(x, y)
    coef, intercept = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:  # binary: sklearn keeps one weight vector for the positive class
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    weight = np.zeros((num_classes, x.shape[1]), dtype=np.float32)
    bias = np.full(num_classes, -1e4, dtype=np.float32)  # a class absent from training is never predicted
    weight[present] = coef
    bias[present] = intercept
    head = torch.nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    scores = clf.scores_[next(iter(clf.scores_))] if isinstance(clf.scores_, dict) else clf.scores_
    fold_by_c = np.asarray(scores).reshape(-1, len(C_GRID))  # (folds, Cs)
    info = {"C": float(np.ravel(clf.C_)[0]), "cv_folds": int(clf.cv.n_splits),
            "cv_accuracy": float(fold_by_c.mean(axis=0).max())}
    return head, info


class LinearStrategy(Strategy):
    name: ClassVar[str] = "linear"
    description: ClassVar[str] = "Frozen network; logistic regression on the final CNN codes."
    uses_feature_store: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"layer": "pool", "pool": "avg"}

    def fit(self, ctx: FitContext) -> FeatureModel:
        return fit_feature_model(self.name, ctx, layer=ctx.params.get("layer") or "pool",
                                 pool=ctx.params.get("pool", "avg"), hidden=(), dropout=0.0)

    @classmethod
    def load(cls, directory: Path, backbone) -> FeatureModel:
        return FeatureModel.load(directory, backbone)


class IntermediateStrategy(Strategy):
    name: ClassVar[str] = "intermediate"
    description: ClassVar[str] = ("Network cut at an earlier layer; classifier (optionally hidden FC layers) "
                                  "on that layer's pooled activations.")
    uses_feature_store: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {"layer": None, "pool": "avg", "hidden": (), "dropout": 0.2}

    def fit(self, ctx: FitContext) -> FeatureModel:
        layer = ctx.params.get("layer")
        pool = ctx.params.get("pool", "avg")
        profile: dict[str, float] | None = None
        if layer is None:
            layer, profile = best_layer_by_cv(ctx, pool)
        model = fit_feature_model(self.name, ctx, layer=layer, pool=pool,
                                  hidden=tuple(ctx.params.get("hidden") or ()),
                                  dropout=float(ctx.params.get("dropout", 0.2)))
        if profile is not None:
            model.info["layer_profile_cv_accuracy"] = profile
            model.info["layer_chosen_by"] = "best cross-validated probe accuracy on the training data"
        return model

    @classmethod
    def load(cls, directory: Path, backbone) -> FeatureModel:
        return FeatureModel.load(directory, backbone)


def best_layer_by_cv(ctx: FitContext, pool: str | int) -> tuple[str, dict[str, float]]:
    """The cut point whose features give the best cross-validated probe accuracy on training data."""
    layers = [cp.name for cp in ctx.backbone.cut_points if cp.name != "stem"]
    fs = stored_features(ctx, layers, pool)
    idx = learnable_indices(ctx)
    features = {layer: fs.features[layer][idx] for layer in layers}
    return best_layer_of(features, ctx.dataset.labels[idx], len(ctx.dataset.classes), ctx.seed)


def best_layer_of(features: dict[str, np.ndarray], y: np.ndarray, num_classes: int,
                  seed: int) -> tuple[str, dict[str, float]]:
    """The layer of ``features`` (layer -> (n, d) array, in cut order) with the best cross-validated
    probe accuracy (the linear strategy's own fit: standardised, L2 strength by CV), and every
    layer's accuracy. Ties go to the earlier layer."""
    profile = {}
    for layer, x in features.items():
        mean, scale = standardiser(x)
        _, info = fit_logistic((x - mean) / scale, y, num_classes, seed)
        profile[layer] = info.get("cv_accuracy", 0.0)
    return max(profile, key=profile.get), profile


def fit_feature_model(strategy: str, ctx: FitContext, *, layer: str, pool: str | int,
                      hidden: tuple[int, ...], dropout: float) -> FeatureModel:
    ctx.backbone.layer(layer)  # raises a ConfigError naming the valid layers
    start = time.perf_counter()
    fs = stored_features(ctx, [layer], pool)
    feats = fs.features[layer]
    num_classes = len(ctx.dataset.classes)
    labels = ctx.dataset.labels
    if hidden:
        from .mlp_head import train_mlp_head

        x_train, y_train = feats[ctx.train_idx], labels[ctx.train_idx]
        mean, scale = standardiser(x_train)
        x_val = y_val = None
        if ctx.val_idx is not None and len(ctx.val_idx):
            x_val, y_val = (feats[ctx.val_idx] - mean) / scale, labels[ctx.val_idx]
        head, history = train_mlp_head((x_train - mean) / scale, y_train, x_val, y_val, hidden=hidden,
                                       dropout=dropout, num_classes=num_classes, seed=ctx.seed,
                                       epochs=int(ctx.params.get("epochs") or 100),
                                       lr=float(ctx.params.get("lr") or 1e-3))
        # The head's own epochs (on cached features, seconds in all) are kept in the model's info;
        # the run's learning curve gets one held-out point, like the other feature strategies,
        # so it is never drawn against the network strategies' epochs.
        info: dict[str, Any] = {"head": "mlp", "head_history": history}
    else:
        idx = learnable_indices(ctx)
        x, y = feats[idx], labels[idx]
        mean, scale = standardiser(x)
        head, info = fit_logistic((x - mean) / scale, y, num_classes, ctx.seed)
        info["head"] = "logistic"
    model = FeatureModel(backbone=ctx.backbone, strategy=strategy, layer=layer, pool=pool,
                         classes=ctx.dataset.classes, mean=mean, scale=scale, head=head.eval(),
                         head_config={"in_features": int(feats.shape[1]), "hidden": list(hidden),
                                      "dropout": dropout},
                         precision=getattr(fs, "precision", ctx.precision), info=info)
    info["train_seconds"] = round(time.perf_counter() - start, 3)
    if ctx.monitor_idx is not None and len(ctx.monitor_idx):
        # A probe has no epochs: its learning curve is one point, measured on the held-out split.
        proba = model.proba_from_features(feats[ctx.monitor_idx])
        acc = float((proba.argmax(1) == labels[ctx.monitor_idx]).mean())
        head_val = [h["val_acc"] for h in info.get("head_history", []) if h.get("val_acc") is not None]
        selection = info.get("cv_accuracy", max(head_val, default=float("nan")))
        ctx.history.append({"epoch": 1, "monitor_acc": acc, "val_acc": selection})
    return model
