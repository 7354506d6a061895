"""Feature-store classifiers: the shared code of ``linear``, ``intermediate`` and ``hidden``.

All three freeze the whole backbone, cut it at one named layer, pool, standardise, and put a
small head on top: multinomial logistic regression with the L2 strength chosen by
cross-validation on the training data (Kornblith et al. 2019, "Do Better ImageNet Models Transfer
Better?"), or an MLP (``_mlp.train_mlp_head``). The features come from the feature store, so
every strategy here costs one forward pass of the dataset in total, shared with the others.
One fitted-model class (``FeatureModel``) serves all three so prediction, saving and export
stay identical.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from torch import nn

from ..backbones import build_head
from ..errors import ConfigError
from ..io import atomic_path, atomic_write_json
from .base import MODEL_CONFIG, MODEL_WEIGHTS, FitContext, FittedModel, check_backbone_weights, read_model_files

if TYPE_CHECKING:
    from ..backbones import Backbone

# Inverse L2 strengths searched by cross-validation. Kornblith et al. search 1e-6..1e5 on
# raw features; on standardised features the optimum for 1e2..1e5 images lies well inside this.
C_GRID = np.logspace(-5, 2, 15)


def one_blas_thread():
    """Context: one BLAS/OpenMP thread for the probes' lbfgs fits. Their matrices are small (rows =
    training images), so a second thread buys little on a quiet machine, and beside any other work
    its spin-waiting is ruinous: Head2Toe's cross-validation on MNIST 10/class (100 x 2,256) took
    180 s with 2 threads next to a training process and 3.1 s with one."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def stored_features(ctx: FitContext, layers: list[str], pool: str | int = "avg"):
    """Features of every image of ``ctx.dataset`` at ``layers``, from the store (one pass if missing)."""
    from ..features import extract_features

    return extract_features(ctx.backbone, ctx.dataset, layers, store_dir=ctx.cache.features, device=ctx.device,
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


def fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, seed: int,
                 class_weight: str = "auto") -> tuple[torch.nn.Linear, dict]:
    """Cross-validated multinomial logistic regression on standardised ``x``, as a torch Linear layer.

    ``class_weight``: "balanced" weighs each class by ``n / (classes * count)`` and chooses the L2
    strength by balanced accuracy; "none" does neither; "auto" is "balanced" when the largest
    class has more than ``IMBALANCE_RATIO`` times the images of the smallest (see that constant).
    """
    from ..engine.balance import IMBALANCE_RATIO, imbalance_ratio

    present = np.unique(y)
    ratio = imbalance_ratio(y)
    if class_weight == "auto":
        class_weight = "balanced" if ratio > IMBALANCE_RATIO else "none"
    if class_weight not in ("balanced", "none"):
        raise ConfigError(f"The 'class_weight' parameter must be one of {{'auto','balanced','none'}}. "
                          f"Got {class_weight!r} instead.")
    balanced = class_weight == "balanced"
    clf = LogisticRegressionCV(Cs=C_GRID, l1_ratios=(0.0,), cv=cv_folds(y, seed),
                               scoring="balanced_accuracy" if balanced else "accuracy",
                               class_weight="balanced" if balanced else None,
                               max_iter=2000, use_legacy_attributes=False, random_state=seed)
    with one_blas_thread():
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
            "cv_accuracy": float(fold_by_c.mean(axis=0).max()),
            "cv_metric": "balanced_accuracy" if balanced else "accuracy",
            "class_weight": class_weight, "imbalance_ratio": round(ratio, 3)}
    return head, info


def probe_fold_scores(x: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                      seed: int) -> np.ndarray:
    """Per-fold accuracy of the standardised linear probe over ``splits`` at the L2 strength with the
    best mean over them (the features' mean and scale from every row: no labels involved)."""
    mean, scale = standardiser(x)
    clf = LogisticRegressionCV(Cs=C_GRID, l1_ratios=(0.0,), cv=splits, scoring="accuracy", max_iter=2000,
                               use_legacy_attributes=False, random_state=seed)
    with one_blas_thread():
        clf.fit((x - mean) / scale, y)
    scores = clf.scores_[next(iter(clf.scores_))] if isinstance(clf.scores_, dict) else clf.scores_
    fold_by_c = np.asarray(scores).reshape(len(splits), len(C_GRID))
    return fold_by_c[:, int(fold_by_c.mean(axis=0).argmax())]


def probe_path_accuracy(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray,
                        seed: int) -> np.ndarray:
    """Validation accuracy of the linear probe at every strength of ``C_GRID`` (warm-started path;
    ``x`` already standardised)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=float(C_GRID[0]), max_iter=2000, warm_start=True, random_state=seed)
    out = np.zeros(len(C_GRID))
    with one_blas_thread():
        for i, c in enumerate(C_GRID):
            clf.set_params(C=float(c))
            clf.fit(x_tr, y_tr)
            out[i] = float((clf.predict(x_va) == y_va).mean())
    return out


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
        from ._mlp import train_mlp_head

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


class FeatureHeadNet(nn.Module):
    """Image (float 0..255, B x 3 x H x W) -> logits: frozen backbone at ``layer``, pool, scale, head.

    Used for prediction and for ONNX / TorchScript export of feature-based strategies.
    """

    def __init__(self, backbone: Backbone, layer: str, pool: str | int, mean: torch.Tensor,
                 scale: torch.Tensor, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.body = backbone.model  # registered so .to(device) and export see the weights
        self.layer = layer
        self.pool = pool
        self.register_buffer("feat_mean", mean.float())
        self.register_buffer("feat_scale", scale.float())
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_layers(x, [self.layer], pool=self.pool)[self.layer].float()
        return self.head((feats - self.feat_mean) / self.feat_scale)


class FeatureModel(FittedModel):
    """A frozen backbone cut at ``layer`` plus a trained head on its standardised, pooled output."""

    def __init__(self, *, backbone: Backbone, strategy: str, layer: str, pool: str | int,
                 classes: list[str], mean: np.ndarray, scale: np.ndarray, head: nn.Module,
                 head_config: dict[str, Any], precision: str = "fp32", info: dict[str, Any] | None = None):
        self.backbone = backbone
        self.strategy = strategy
        self.layer = layer
        self.pool = pool
        self.classes = list(classes)
        self.head_config = dict(head_config)
        self.precision = precision
        self.info = dict(info or {})
        self.net = FeatureHeadNet(backbone, layer, pool, torch.as_tensor(mean), torch.as_tensor(scale), head).eval()

    # -- prediction -------------------------------------------------------------------------
    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        from ..features import compute_features

        feats = compute_features(self.backbone, images, [self.layer], pool=self.pool,
                                 batch_size=batch_size, precision=self.precision)[self.layer]
        return self.proba_from_features(feats)

    def proba_from_features(self, feats: np.ndarray) -> np.ndarray:
        """Probabilities from already extracted (unstandardised) features of ``layer``."""
        with torch.inference_mode():
            z = (torch.as_tensor(feats, dtype=torch.float32) - self.net.feat_mean) / self.net.feat_scale
            return torch.softmax(self.net.head(z), dim=1).numpy()

    def to_module(self) -> nn.Module:
        return self.net

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = Path(directory)
        tensors = {"feat_mean": self.net.feat_mean, "feat_scale": self.net.feat_scale}
        tensors.update({f"head.{k}": v.contiguous() for k, v in self.net.head.state_dict().items()})
        with atomic_path(directory / MODEL_WEIGHTS) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        atomic_write_json(directory / MODEL_CONFIG, {
            "kind": "feature_model",
            "strategy": self.strategy,
            "layer": self.layer,
            "pool": self.pool,
            "classes": self.classes,
            "head": self.head_config,
            "precision": self.precision,
            "backbone_weights_hash": self.backbone.weights_hash,
            "info": self.info,
        })

    @classmethod
    def load(cls, directory: Path, backbone: Backbone) -> FeatureModel:
        directory = Path(directory)
        config, tensors = read_model_files(directory)
        check_backbone_weights(config, backbone, directory)
        head_cfg = config["head"]
        hidden = tuple(head_cfg.get("hidden", ()))
        # A probe without hidden layers is one Linear layer whatever dropout its config records.
        head = build_head(head_cfg["in_features"], len(config["classes"]), hidden,
                          head_cfg.get("dropout", 0.0) if hidden else 0.0)
        head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
        return cls(backbone=backbone, strategy=config["strategy"], layer=config["layer"], pool=config["pool"],
                   classes=config["classes"], mean=tensors["feat_mean"].numpy(),
                   scale=tensors["feat_scale"].numpy(), head=head, head_config=head_cfg,
                   precision=config.get("precision", "fp32"), info=config.get("info"))


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and scale of the training features (scale 1 where a feature is constant)."""
    mean = x.mean(axis=0).astype(np.float32)
    scale = x.std(axis=0).astype(np.float32)
    scale[scale < 1e-6] = 1.0
    return mean, scale
