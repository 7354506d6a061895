"""The two families of strategies, and the training settings the network strategies share.

A strategy module subclasses one of these bases: ``FeatureStoreStrategy`` (frozen network, a head
on stored features: ``_probe.py``) or ``NetworkStrategy`` (the network trained end to end:
``_network.py``). Their fitted-model code, and its imports (the engine, scikit-learn), loads only
when a strategy is fitted or loaded, so reading the registry's declarations stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .base import FitContext, FittedModel, Strategy

if TYPE_CHECKING:
    from ..backbones import Backbone


# The training settings the network strategies share (the engine's TrainConfig fields); each
# strategy's module overrides what makes it that strategy. "auto" values are resolved from the
# training data when the strategy fits (``_recipe``: one epoch of warm-up, at most a fifth of the
# run; class-weighted loss and balanced-accuracy selection for imbalanced classes; BatchNorm
# statistics kept or re-estimated on the target from their measured divergence).
NETWORK_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 32,
    "optimizer": "adamw",
    "lr": 1e-3,
    "body_lr_ratio": 0.1,
    "weight_decay": 0.01,
    "warmup_epochs": "auto",
    "label_smoothing": 0.0,
    "augment": True,
    "flip": True,
    "crop_scale": 0.5,
    "grad_accum": 1,
    "early_stopping_patience": None,
    "bn_policy": "auto",
    "class_weight": "auto",
    "hidden": (),
    "dropout": 0.0,
    "num_workers": 0,
}


class FeatureStoreStrategy(Strategy):
    """Base of the strategies that keep the network frozen and train on the feature store."""

    uses_feature_store: ClassVar[bool] = True

    @classmethod
    def load(cls, directory: Path, backbone: Backbone) -> FittedModel:
        from ._probe import FeatureModel

        return FeatureModel.load(directory, backbone)

    # -- the cross-validation interface: what `auto` scores, by repeated K-fold on the training role.
    # The default is the linear probe on one cut point (params["layer"], else the declared default,
    # else "pool"): the fit of ``linear`` and of ``intermediate`` at a given layer.
    @classmethod
    def cv_candidates(cls, backbone: Backbone) -> list[dict[str, Any]]:
        """Parameter settings `auto` should score for this strategy (each one a full ``params`` override)."""
        return [{}]

    @classmethod
    def candidate_layers(cls, backbone: Backbone, params: dict[str, Any]) -> list[str]:
        """The cut points the candidate ``params`` reads."""
        return [params.get("layer") or cls.defaults.get("layer") or "pool"]

    @classmethod
    def candidate_features(cls, ctx: FitContext, params: dict[str, Any]) -> dict[str, np.ndarray]:
        """Features (every image of ctx.dataset, rows aligned with it) this candidate reads, from the
        store (one pass over the images if missing)."""
        from ._probe import stored_features

        pool = params.get("pool", cls.defaults.get("pool", "avg"))
        return stored_features(ctx, cls.candidate_layers(ctx.backbone, params), pool).features

    @classmethod
    def fit_arrays(cls, features: dict[str, np.ndarray], y: np.ndarray, num_classes: int, params: dict[str, Any],
                   seed: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        """Fit on rows already selected (a training fold); returns ``predict_proba(features of other
        rows) -> (n, num_classes)`` (a ``_store_head.FittedHead``, which also holds the head module)."""
        from ._probe import standardiser
        from ._store_head import FittedHead, linear_head

        layer = next(iter(features)) if len(features) == 1 else (params.get("layer") or "pool")
        x = features[layer]
        mean, scale = standardiser(x)
        head, info = linear_head(x, y, num_classes, seed, mean=mean, scale=scale)
        return FittedHead([layer], head, {**info, "head": "logistic", "layer": layer})


    @classmethod
    def plain_probe(cls, params: dict[str, Any]) -> bool:
        """Is the candidate ``params`` the linear probe on one cut point's features (so ``cv_scores``
        may take the probe's fast path)? True unless the strategy has its own ``fit_arrays``."""
        return getattr(cls.fit_arrays, "__func__", None) is FeatureStoreStrategy.fit_arrays.__func__

    @classmethod
    def cv_scores(cls, features: dict[str, np.ndarray], y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                  num_classes: int, params: dict[str, Any], seed: int) -> np.ndarray:
        """Accuracy on the validation rows of each of ``splits`` (``auto``'s cross-validation).

        A candidate that is not a plain probe (``plain_probe``) is refitted on every training fold
        (nested: its inner choices are made inside the fold). The linear probe on one layer takes the
        fast path scikit-learn's ``LogisticRegressionCV`` takes: the whole L2 path on each fold,
        warm-started, and the strength with the best mean over the folds -- one strength chosen
        from a smooth one-dimensional curve, for a tenth of the nested cost.
        """
        if not cls.plain_probe(params):
            accs = []
            for tr, va in splits:
                predict = cls.fit_arrays({k: v[tr] for k, v in features.items()}, y[tr], num_classes, params, seed)
                accs.append(float((predict({k: v[va] for k, v in features.items()}).argmax(1) == y[va]).mean()))
            return np.asarray(accs)
        from ._probe import probe_fold_scores

        layer = next(iter(features)) if len(features) == 1 else (params.get("layer") or "pool")
        return probe_fold_scores(features[layer], y, splits, seed)


class StoreHeadStrategy(FeatureStoreStrategy):
    """A feature-store strategy whose ``fit`` is its cross-validation interface run on every learnable
    image (``fit_store_head``), saved as a ``_store_head.StoreHeadModel``."""

    def fit(self, ctx: FitContext) -> FittedModel:
        return self.fit_store_head(ctx, {**self.defaults, **ctx.params})

    @classmethod
    def fit_store_head(cls, ctx: FitContext, params: dict[str, Any], *, adaptation: dict[str, Any] | None = None,
                       feature_backbone: Backbone | None = None) -> FittedModel:
        """``fit`` through the CV interface: ``candidate_features``, then ``fit_arrays`` on every
        learnable image (train + selection: the head chooses its settings by cross-validation inside
        them), so what ``auto`` scores is what ``fit`` trains. ``adaptation``/``feature_backbone``:
        a backbone with re-estimated BatchNorm statistics (``adabn``)."""
        import time

        from ..runtime import resolve_device, resolve_precision
        from ._probe import learnable_indices
        from ._store_head import StoreHeadModel

        start = time.perf_counter()
        features = cls.candidate_features(ctx, params)
        idx = learnable_indices(ctx)
        labels = np.asarray(ctx.dataset.labels)
        head = cls.fit_arrays({k: v[idx] for k, v in features.items()}, labels[idx], len(ctx.dataset.classes),
                              params, ctx.seed)
        info = dict(head.info)
        info["train_seconds"] = round(time.perf_counter() - start, 3)
        precision = resolve_precision(ctx.precision, resolve_device(ctx.device), "extract")
        model = StoreHeadModel(backbone=ctx.backbone, strategy=cls.name, head=head, pool=params.get("pool", "avg"),
                               classes=ctx.dataset.classes, precision=precision, info=info, adaptation=adaptation,
                               feature_backbone=feature_backbone)
        if ctx.monitor_idx is not None and len(ctx.monitor_idx):
            # No epochs: the learning curve is one point on the held-out split, like the other probes.
            proba = head({k: v[ctx.monitor_idx] for k, v in features.items()})
            acc = float((proba.argmax(1) == labels[ctx.monitor_idx]).mean())
            row = {"epoch": 1, "monitor_acc": acc}
            if "cv_accuracy" in info:  # absent when nothing was chosen (e.g. knn with k given)
                row["val_acc"] = info["cv_accuracy"]
            ctx.history.append(row)
        return model

    @classmethod
    def load(cls, directory: Path, backbone: Backbone) -> FittedModel:
        from ._store_head import StoreHeadModel

        return StoreHeadModel.load(directory, backbone)


class NetworkStrategy(Strategy):
    """Base of the strategies that train (part of) the network end to end on decoded images."""

    uses_feature_store: ClassVar[bool] = False

    @classmethod
    def load(cls, directory: Path, backbone: Backbone) -> FittedModel:
        from ._network import NetworkModel

        return NetworkModel.load(directory, backbone)
