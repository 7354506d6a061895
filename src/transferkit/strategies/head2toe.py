"""``head2toe`` — a linear classifier on the pooled features of every cut point together (Head2Toe).

Evci et al. 2022 ("Head2Toe: Utilizing intermediate representations for better transfer
learning") matched full fine-tuning on VTAB at about 1/100 of its cost by probing features from
all layers of a frozen network, keeping the ones a group-lasso classifier finds relevant. Here:

1. the pooled features of every cut point but the stem (a layer equal to an earlier one, such as
   ``pool`` when it is the last stage's average, is read once), concatenated;
2. each feature standardised on the training rows, then each layer weighted by
   ``sqrt(mean width / its width)`` so a wide layer does not drown the narrow ones (every layer's
   block has the same total variance; the whole has the variance of plain standardisation, so the
   probe's L2 grid still fits);
3. relevance scores: the norm of each feature's weights (across classes) in a multinomial
   logistic regression with a group-lasso penalty (one group per feature), fitted by proximal
   gradient (FISTA); ties among discarded features are broken by their gradient at zero;
4. for each kept fraction in ``KEEP_FRACTIONS``: the linear probe (L2 strength by CV, as
   ``linear``) on the top fraction; the fraction with the best cross-validated accuracy wins
   (ties: the fewer features). ``keep_fraction`` fixes it instead.

The relevance scores see all the rows the fractions are then cross-validated on (as the paper's
selection sees its training split): the choice of fraction is slightly optimistic, the score
``auto`` gets from its outer folds is not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .base import FitContext, FittedModel
from .families import StoreHeadStrategy

KEEP_FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)
# Group-lasso strength as a fraction of the smallest strength that discards every feature.
LASSO_RATIO = 0.1
LASSO_STEPS = 200


class Head2ToeStrategy(StoreHeadStrategy):
    name: ClassVar[str] = "head2toe"
    description: ClassVar[str] = ("Frozen network; logistic regression on the features of every cut point "
                                  "together, the most relevant kept (Head2Toe).")
    case: ClassVar[str] = "small, similar or different"
    complexity: ClassVar[int] = 2
    defaults: ClassVar[dict[str, Any]] = {"keep_fraction": None, "pool": "avg"}

    @classmethod
    def candidate_layers(cls, backbone: Any, params: dict[str, Any]) -> list[str]:
        return [cp.name for cp in backbone.cut_points if cp.name != "stem"]

    @classmethod
    def fit_arrays(cls, features: dict[str, np.ndarray], y: np.ndarray, num_classes: int, params: dict[str, Any],
                   seed: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        from ._probe import standardiser
        from ._store_head import FittedHead, linear_head

        layers = distinct_layers(features)
        x = np.concatenate([features[layer] for layer in layers], axis=1)
        mean, scale = standardiser(x)
        widths = np.array([features[layer].shape[1] for layer in layers], dtype=np.float64)
        weight = np.repeat(np.sqrt(widths.mean() / widths), widths.astype(int)).astype(np.float32)
        scale = scale / weight
        scores = relevance_scores((x - mean) / scale, y, num_classes)
        order = np.argsort(-scores, kind="stable")
        fraction = params.get("keep_fraction")
        fractions = KEEP_FRACTIONS if fraction is None else (float(fraction),)
        best = None
        by_fraction = {}
        for f in fractions:
            keep = np.sort(order[:max(1, math.ceil(f * x.shape[1]))])
            head, info = linear_head(x, y, num_classes, seed, mean=mean[keep], scale=scale[keep], keep=keep)
            by_fraction[f] = info["cv_accuracy"]
            if best is None or info["cv_accuracy"] > best[2]["cv_accuracy"]:
                best = (f, head, info)
        f, head, info = best
        kept_by_layer = np.bincount(np.repeat(np.arange(len(layers)), widths.astype(int))[head.keep.numpy()],
                                    minlength=len(layers))
        info = {**info, "head": "logistic", "layers": layers, "keep_fraction": f,
                "kept_features": int(head.keep.numel()),
                "kept_by_layer": dict(zip(layers, kept_by_layer.tolist(), strict=True)),
                "cv_accuracy_by_fraction": by_fraction}
        return FittedHead(layers, head, info)

    @classmethod
    def cv_scores(cls, features: dict[str, np.ndarray], y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                  num_classes: int, params: dict[str, Any], seed: int) -> np.ndarray:
        """``auto``'s per-fold accuracies: on each fold the relevance scores come from the training rows
        only, then every kept fraction's probe along the whole L2 path is scored on the fold's
        validation rows; the (fraction, strength) with the best mean over the folds gives the scores
        (as ``LogisticRegressionCV`` picks its strength: one pair from a small smooth grid)."""
        from ._probe import probe_path_accuracy

        layers = distinct_layers(features)
        x = np.concatenate([features[layer] for layer in layers], axis=1)
        fraction = params.get("keep_fraction")
        fractions = KEEP_FRACTIONS if fraction is None else (float(fraction),)
        table = []  # (fold, fraction, C)
        for tr, va in splits:
            z_tr, z_va = layer_weighted(x[tr], x[va], features, layers)
            order = np.argsort(-relevance_scores(z_tr, y[tr], num_classes), kind="stable")
            table.append([probe_path_accuracy(z_tr[:, keep], y[tr], z_va[:, keep], y[va], seed)
                          for keep in (np.sort(order[:max(1, math.ceil(f * x.shape[1]))]) for f in fractions)])
        acc = np.asarray(table)
        f_best, c_best = np.unravel_index(int(acc.mean(axis=0).argmax()), acc.shape[1:])
        return acc[:, f_best, c_best]

    def fit(self, ctx: FitContext) -> FittedModel:
        fraction = ctx.params.get("keep_fraction")
        if fraction is not None and not (isinstance(fraction, int | float) and 0.0 < float(fraction) <= 1.0):
            from ..errors import ConfigError

            raise ConfigError(f"The 'keep_fraction' parameter of head2toe must be a number in (0, 1]. Got "
                              f"{fraction!r}; leave it unset to choose it by cross-validation.")
        return super().fit(ctx)


def layer_weighted(x_tr: np.ndarray, x_va: np.ndarray, features: dict[str, np.ndarray],
                   layers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Both row sets standardised on the training rows, each layer weighted as ``fit_arrays`` does."""
    from ._probe import standardiser

    mean, scale = standardiser(x_tr)
    widths = np.array([features[layer].shape[1] for layer in layers], dtype=np.float64)
    scale = scale / np.repeat(np.sqrt(widths.mean() / widths), widths.astype(int)).astype(np.float32)
    return (x_tr - mean) / scale, (x_va - mean) / scale


def distinct_layers(features: dict[str, np.ndarray]) -> list[str]:
    """The layers in order, less any equal to an earlier one (e.g. ``pool`` = the last stage's average)."""
    kept: list[str] = []
    for layer, x in features.items():
        if not any(features[k].shape == x.shape and np.allclose(features[k], x, rtol=1e-5, atol=1e-6) for k in kept):
            kept.append(layer)
    return kept


def relevance_scores(z: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-feature relevance: the norm of its weights across classes in a group-lasso multinomial
    logistic regression on ``z`` (FISTA, ``LASSO_STEPS`` full-batch steps), plus a tie-break below
    any nonzero norm from the gradient at zero (which features the fit would take in first)."""
    import torch

    x = torch.as_tensor(z, dtype=torch.float32)
    n, d = x.shape
    target = torch.nn.functional.one_hot(torch.as_tensor(y, dtype=torch.long), num_classes).float()
    prior = target.mean(0).clamp_min(1e-6)
    b = torch.log(prior)
    grad0 = x.T @ (torch.softmax(b.expand(n, -1), 1) - target) / n  # (d, C)
    g0 = grad0.norm(dim=1)
    lam = LASSO_RATIO * float(g0.max())
    # Lipschitz constant of the mean cross-entropy's gradient: ||X||_2^2 / (2n) (softmax Hessian <= 1/2).
    v = torch.ones(d) / math.sqrt(d)
    for _ in range(30):
        v = x.T @ (x @ v)
        v = v / v.norm().clamp_min(1e-12)
    step = 1.0 / max(float((x @ v).norm() ** 2) / (2 * n) + 0.5, 1e-6)
    w = torch.zeros(d, num_classes)
    w_prev, w_look, b_look, t = w, w, b.clone(), 1.0
    for _ in range(LASSO_STEPS):
        p = torch.softmax(x @ w_look + b_look, 1) - target
        w_new = w_look - step * (x.T @ p) / n
        b_new = b_look - step * p.mean(0)
        norms = w_new.norm(dim=1, keepdim=True)
        w_new = w_new * (1 - step * lam / norms.clamp_min(1e-12)).clamp_min(0)  # group soft-threshold
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        w_look = w_new + (t - 1) / t_new * (w_new - w_prev)
        b_look = b_new + (t - 1) / t_new * (b_new - b)
        w_prev, b, t = w_new, b_new, t_new
    norms = w_prev.norm(dim=1).numpy().astype(np.float64)
    tie = g0.numpy().astype(np.float64)
    return norms + 1e-9 * tie / max(float(tie.max()), 1e-12) * float(norms[norms > 0].min(initial=1.0))
