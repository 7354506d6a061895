"""The statistics behind every accuracy transferkit reports: intervals and paired decisions.

Which interval is used where, and why:

- **One model scored once** (``fit``, ``evaluate``, ``metrics.json``): accuracy gets the 95%
  **Wilson** score interval over the scored images. It is closed-form, never leaves [0, 1] and
  keeps its coverage near 0 and 1 errors, where the normal ("Wald") interval collapses to a
  point. Balanced accuracy is a mean of per-class recalls with no closed form, so it gets a
  percentile **bootstrap over the scored images** (resampled within each class, so every class
  keeps its size; fixed seed, so the same predictions always give the same interval), widened
  to at least the Wilson width for the same N (see below).
- **One strategy over R draws** (``compare --repeats R``, data-size curves): each draw retrains
  on a re-drawn training subset with its own seed and is scored on the same held-out images.
  The interval of the mean accuracy is a **two-way bootstrap**: draws and images are resampled
  together, so it holds both the training noise (which draw) and the test-set noise (which
  images). It is never narrower than the Wilson interval of the mean accuracy on the N scored
  images: a resample of a set that every draw got right is always right, so the bootstrap alone
  would claim certainty where N images cannot give it.
- **Two strategies on the same images and draws**: the interval of the difference is the
  **paired** two-way bootstrap (the same resampled draws and images for both). A difference is
  called only when that interval excludes zero **and** an exact sign test over the images on
  which the two disagree (McNemar's exact test when there is one draw) has p < 0.05: percentile
  intervals are too narrow when only a handful of images disagree, and the exact test is not.
  Otherwise the verdict is "no measurable difference".
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .errors import ConfigError

CONFIDENCE = 0.95
N_BOOT = 2000
SEED = 0  # the bootstrap's own seed: the same predictions always give the same interval
ALPHA = 1.0 - CONFIDENCE

A_BETTER, B_BETTER, NO_DIFFERENCE = "a_better", "b_better", "no_measurable_difference"


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n``; (nan, nan) when n is 0.

    ``successes`` may be fractional (a mean over draws times ``n``)."""
    if n < 0 or successes < 0 or successes > n:
        raise ConfigError(f"wilson_interval needs 0 <= successes <= n; got successes={successes}, n={n}.")
    if n == 0:
        return float("nan"), float("nan")
    z = _z(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # round away float dust so 0 and 1 read as bounds, not 2.8e-17
    return max(0.0, round(centre - half, 12)), min(1.0, round(centre + half, 12))


def proportion_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` images, floored at that of one image in
    ``n`` (so a perfect or zero score on a few images still carries its noise)."""
    p = min(max(float(p), 0.0), 1.0)
    return math.sqrt(max(p * (1 - p), 1.0 / n) / n)


def _as_draws(pred: Any) -> np.ndarray:
    """Predictions as a (draws, images) int array (one draw may be given as a 1-D array)."""
    arr = np.asarray(pred, dtype=np.int64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ConfigError(f"predictions must be (draws, images); got shape {arr.shape}.")
    return arr


def _balanced(correct: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Balanced accuracy of each row of ``correct`` (rows: resamples x draws flattened)."""
    classes = np.unique(y)
    recalls = [correct[..., y == c].mean(axis=-1) for c in classes]
    return np.mean(recalls, axis=0)


def _resamples(y: np.ndarray, n_draws: int, n_boot: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of (draw indices (b, n_draws), image indices (b, n)), images resampled within class.

    Resampling within each class keeps the class sizes, so balanced accuracy is defined in every
    resample and the accuracy's interval reflects the scored set's real composition. Chunks keep
    the memory to about 2 million cells whatever the number of scored images (one chunk up to
    1,000 images); the chunk size follows from the shape alone, so an interval depends only on
    the predictions and ``seed``.
    """
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(y == c) for c in np.unique(y)]
    step = max(1, min(n_boot, 2_000_000 // max(1, len(y) * n_draws)))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        draws = rng.integers(0, n_draws, size=(b, n_draws)) if n_draws > 1 else np.zeros((b, 1), np.int64)
        images = np.empty((b, len(y)), dtype=np.int64)
        for members in classes:
            images[:, members] = members[rng.integers(0, len(members), size=(b, len(members)))]
        yield draws, images


def _percentile(values: np.ndarray, confidence: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


def accuracy_summary(y_true: Sequence[int], pred: Any, *, confidence: float = CONFIDENCE,
                     n_boot: int = N_BOOT, seed: int = SEED) -> dict[str, Any]:
    """Mean accuracy and balanced accuracy over draws, each with its 95% interval.

    ``pred`` is (draws, images) or one draw (images,). Returns ``{"accuracy": {"mean", "low",
    "high", "method"}, "balanced_accuracy": {...}, "draws": R, "n": images, "per_draw": [acc]}``.
    One draw: accuracy by Wilson, balanced accuracy by the bootstrap over images; several draws:
    both by the two-way bootstrap over draws and images (see the module docstring).
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = _as_draws(pred)
    if p.shape[1] != len(y):
        raise ConfigError(f"predictions cover {p.shape[1]} images but there are {len(y)} labels.")
    if not len(y):
        nan = {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "method": "none (no images)"}
        return {"accuracy": nan, "balanced_accuracy": dict(nan), "draws": int(p.shape[0]), "n": 0, "per_draw": []}
    correct = p == y[None, :]
    per_draw = correct.mean(axis=1)
    acc_parts, bal_parts = [], []
    for draws, images in _resamples(y, p.shape[0], n_boot, seed):
        # boot[b, r, i]: whether resampled draw r got resampled image i right, in resample b
        boot = correct[draws[:, :, None], images[:, None, :]]
        acc_parts.append(boot.mean(axis=(1, 2)))
        bal_parts.append(_balanced(boot, y).mean(axis=1))  # a resampled image keeps its position's class
    acc_boot, bal_boot = np.concatenate(acc_parts), np.concatenate(bal_parts)
    bal = float(_balanced(correct, y).mean())
    if p.shape[0] == 1:
        k = int(correct.sum())
        lo, hi = wilson_interval(k, len(y), confidence)
        acc = {"mean": k / len(y), "low": lo, "high": hi, "method": "Wilson score interval over the scored images"}
        bal_method = "bootstrap over the scored images (within class; at least the Wilson width)"
    else:
        lo, hi = _percentile(acc_boot, confidence)
        w_lo, w_hi = wilson_interval(float(per_draw.mean()) * len(y), len(y), confidence)
        lo, hi = min(lo, w_lo), max(hi, w_hi)
        acc = {"mean": float(per_draw.mean()), "low": lo, "high": hi,
               "method": f"bootstrap over {p.shape[0]} draws and the scored images (at least the Wilson width)"}
        bal_method = acc["method"]
    blo, bhi = _percentile(bal_boot, confidence)
    w_lo, w_hi = wilson_interval(bal * len(y), len(y), confidence)  # never narrower than N images allow
    blo, bhi = min(blo, w_lo), max(bhi, w_hi)
    return {"accuracy": acc, "balanced_accuracy": {"mean": bal, "low": blo, "high": bhi, "method": bal_method},
            "draws": int(p.shape[0]), "n": int(len(y)), "per_draw": [float(a) for a in per_draw]}


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial (sign) test p-value of ``wins`` vs ``losses`` at p = 1/2; 1.0 when no pair differs.

    On one draw's right/wrong pairs it is McNemar's exact test (wins = images only A gets right).
    """
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return float(min(1.0, 2.0 * tail))


def paired_difference(y_true: Sequence[int], pred_a: Any, pred_b: Any, *, confidence: float = CONFIDENCE,
                      n_boot: int = N_BOOT, seed: int = SEED) -> dict[str, Any]:
    """Accuracy of A minus accuracy of B, scored on the same images and paired draw by draw.

    Returns ``{"diff", "low", "high", "p", "wins", "losses", "decision", "method"}``; ``diff`` and
    the interval are in accuracy units; ``wins`` / ``losses`` count images whose mean correctness
    over draws is higher for A / for B; ``p`` is the exact sign test on them; ``decision`` is
    ``a_better``, ``b_better`` or ``no_measurable_difference`` (see the module docstring).
    """
    y = np.asarray(y_true, dtype=np.int64)
    a, b = _as_draws(pred_a), _as_draws(pred_b)
    if a.shape != b.shape or a.shape[1] != len(y):
        raise ConfigError(f"paired_difference needs both strategies scored on the same draws and {len(y)} images; "
                          f"got shapes {a.shape} and {b.shape}.")
    delta = (a == y).astype(np.float64) - (b == y).astype(np.float64)  # (draws, images) in {-1, 0, 1}
    return paired_delta(y, delta, confidence=confidence, n_boot=n_boot, seed=seed)


def paired_delta(y_true: Sequence[int], delta: Any, *, confidence: float = CONFIDENCE, n_boot: int = N_BOOT,
                 seed: int = SEED) -> dict[str, Any]:
    """``paired_difference`` for any per-(draw, image) difference, e.g. of a slope between two sizes.

    ``delta[r, i]`` is A's score minus B's on image ``i`` in draw ``r``; its mean is the difference.
    """
    y = np.asarray(y_true, dtype=np.int64)
    delta = np.asarray(delta, dtype=np.float64)
    if delta.ndim != 2 or delta.shape[1] != len(y) or not len(y):
        raise ConfigError(f"paired_delta needs a (draws, {len(y)}) difference array; got shape {delta.shape}.")
    diff = float(delta.mean())
    boot = np.concatenate([delta[draws[:, :, None], images[:, None, :]].mean(axis=(1, 2))
                           for draws, images in _resamples(y, delta.shape[0], n_boot, seed)])
    lo, hi = _percentile(boot, confidence)
    per_image = delta.mean(axis=0)
    wins, losses = int((per_image > 0).sum()), int((per_image < 0).sum())
    p = sign_test(wins, losses)
    alpha = 1.0 - confidence
    if lo > 0 and p < alpha:
        decision = A_BETTER
    elif hi < 0 and p < alpha:
        decision = B_BETTER
    else:
        decision = NO_DIFFERENCE
    test = "McNemar's exact test" if delta.shape[0] == 1 else "exact sign test over images"
    return {"diff": diff, "low": lo, "high": hi, "p": p, "wins": wins, "losses": losses, "decision": decision,
            "draws": int(delta.shape[0]), "n": int(len(y)),
            "method": f"paired bootstrap over {delta.shape[0]} draw(s) and {len(y)} images; {test}"}


def verdict(name_a: str, name_b: str, comparison: dict[str, Any]) -> str:
    """The comparison in words, in points (1 point = 0.01 accuracy), with its interval."""
    d = comparison
    span = f"{100 * d['diff']:+.1f} points, 95% interval [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
    if d["decision"] == A_BETTER:
        return f"{name_a} is better than {name_b}: {span}, p = {d['p']:.2g}"
    if d["decision"] == B_BETTER:
        return f"{name_b} is better than {name_a}: {span}, p = {d['p']:.2g}"
    return f"{name_a} vs {name_b}: no measurable difference ({span}, p = {d['p']:.2g})"


def mean_interval(values: Sequence[float], *, confidence: float = CONFIDENCE, n_boot: int = N_BOOT,
                  seed: int = SEED) -> dict[str, Any]:
    """Mean of per-draw numbers (e.g. a learning curve's start) with a bootstrap interval over draws.

    With fewer than two draws there is no spread to resample: the interval is (nan, nan) and
    the method says so, rather than pretending a single draw is certain.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "method": "none (no values)"}
    if len(v) == 1:
        return {"mean": float(v[0]), "low": float("nan"), "high": float("nan"), "method": "one draw: no interval"}
    rng = np.random.default_rng(seed)
    boot = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = _percentile(boot, confidence)
    return {"mean": float(v.mean()), "low": lo, "high": hi, "method": f"bootstrap over {len(v)} draws"}
