"""What a comparison's draws support: intervals, paired verdicts, and transfer's benefit over data size.

Everything here reads the per-image predictions a ``compare`` result records
(``scored_labels``; ``strategies[name]["draws"]``; ``data_size_draws``) and uses
``transferkit.stats`` for every interval and test. A result without them (written before
repeats existed) gives no verdicts: nothing is called better, worse, or negative transfer
without a paired test behind it.

Benefit over data size (the three benefits of transfer the literature names, read from the
data-size curves, transfer strategy minus the baseline, paired by draw and image):

- **start**: the difference at the smallest measured training size (the few-label regime);
- **slope**: the difference in gain per doubling of training images, between the smallest
  size and all images: ``(acc(all) - acc(smallest)) / log2(all / smallest)``;
- **asymptote**: the difference with all training images.

**Scratch catches up** at the smallest size from which the baseline is no longer measurably
worse than the best transfer strategy at every larger measured size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import stats
from .benefit import is_finite
from .roles import BASELINE

ALL = "all"


def _labels(result: Mapping[str, Any]) -> np.ndarray | None:
    labels = result.get("scored_labels")
    return np.asarray(labels, dtype=np.int64) if labels else None


def strategy_draws(result: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{strategy: (draws, images) predictions on the scored images}, for strategies that recorded them."""
    out = {}
    for name, s in (result.get("strategies") or {}).items():
        draws = [d.get("pred") for d in (s or {}).get("draws") or [] if d.get("pred") is not None]
        if draws:
            out[name] = np.asarray(draws, dtype=np.int64)
    return out


def size_draws(result: Mapping[str, Any]) -> dict[str, dict[Any, np.ndarray]]:
    """{strategy: {images per class (int) or "all": (draws, images) predictions}}."""
    whole = strategy_draws(result)
    out: dict[str, dict[Any, np.ndarray]] = {}
    for name, curve in (result.get("data_size_draws") or {}).items():
        points: dict[Any, np.ndarray] = {int(n): np.asarray(p, dtype=np.int64) for n, p in curve.items() if p}
        if name in whole:
            points[ALL] = whole[name]
        out[name] = points
    return out


def significance(result: Mapping[str, Any], baseline: str = BASELINE) -> dict[str, Any] | None:
    """Each strategy's interval, each transfer strategy against ``baseline``, and whether the best is clear.

    ``{"summary": {name: accuracy_summary}, "vs_baseline": {name: paired_difference + "text"},
    "best": {"strategy", "clear": bool, "top_group": [names not measurably worse], "versus": {...}}}``;
    None when the result holds no per-image predictions.
    """
    y = _labels(result)
    draws = strategy_draws(result)
    if y is None or not draws:
        return None
    summary = {name: stats.accuracy_summary(y, p) for name, p in draws.items()}
    vs_baseline = {}
    if baseline in draws:
        for name, p in draws.items():
            if name != baseline and p.shape == draws[baseline].shape:
                d = stats.paired_difference(y, p, draws[baseline])
                vs_baseline[name] = {**d, "text": stats.verdict(name, baseline, d)}
    top = max(summary, key=lambda n: summary[n]["accuracy"]["mean"])
    versus = {}
    for name, p in draws.items():
        if name != top and p.shape == draws[top].shape:
            d = stats.paired_difference(y, draws[top], p)
            versus[name] = {**d, "text": stats.verdict(top, name, d)}
    tied = [n for n, d in versus.items() if d["decision"] != stats.A_BETTER]
    return {"summary": summary, "vs_baseline": vs_baseline,
            "best": {"strategy": top, "clear": not tied and bool(versus), "top_group": [top, *tied],
                     "versus": versus}}


def curve_benefit_over_draws(result: Mapping[str, Any], baseline: str = BASELINE) -> dict[str, Any] | None:
    """Start, slope and asymptote of each strategy's learning curve minus the baseline's, over draws.

    Draw ``r`` of a strategy is paired with draw ``r`` of the baseline (same training subset and
    seed); each difference gets its mean and a bootstrap interval over the draws
    (``stats.mean_interval``: none with one draw). ``{name: {"start", "slope", "asymptote":
    {mean, low, high, method}}}``; None without recorded draw histories.
    """
    from .benefit import _curve, curve_numbers

    def numbers(draw: Mapping[str, Any]) -> dict[str, Any] | None:
        acc, _ = _curve(draw.get("history") or [], "monitor_acc", "val_acc")
        return curve_numbers(acc) if acc else None

    strategies = result.get("strategies") or {}
    base = [numbers(d) for d in (strategies.get(baseline) or {}).get("draws") or []]
    if len(base) < 2 or any(b is None for b in base):
        return None
    out = {}
    for name, s in strategies.items():
        draws = [numbers(d) for d in (s or {}).get("draws") or []]
        if name == baseline or len(draws) != len(base) or any(d is None for d in draws):
            continue
        out[name] = {k: stats.mean_interval([d[k] - b[k] for d, b in zip(draws, base, strict=True)])
                     for k in ("start", "slope", "asymptote")}
    return out or None


def significance_of(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The result's recorded ``significance``, else computed from its draws (None without any)."""
    recorded = result.get("significance")
    return recorded if isinstance(recorded, Mapping) and recorded.get("summary") else significance(result)


def size_evidence_of(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The result's recorded ``data_size_evidence``, else computed from its draws (None without any)."""
    recorded = result.get("data_size_evidence")
    return recorded if isinstance(recorded, Mapping) and recorded.get("points") else size_evidence(result)


def _correct(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (p == y[None, :]).astype(np.float64)


def size_evidence(result: Mapping[str, Any], baseline: str = BASELINE) -> dict[str, Any] | None:
    """Intervals per data-size point, transfer vs ``baseline`` per size, start/slope/asymptote, catch-up.

    Returns ``{"sizes": [n..., "all"], "points": {name: {size: accuracy_summary}},
    "vs_baseline": {name: {size: paired_difference}}, "benefit": {name: {"start", "slope",
    "asymptote": paired difference (slope per doubling)}}, "catches_up": {...} | None}``; None
    without recorded draws.
    """
    y = _labels(result)
    curves = size_draws(result)
    if y is None or not curves:
        return None
    all_n = all_images_per_class(result)
    points = {name: {str(n): stats.accuracy_summary(y, p) for n, p in c.items()} for name, c in curves.items()}
    out: dict[str, Any] = {"points": points, "vs_baseline": {}, "benefit": {}, "catches_up": None,
                           "all_per_class": all_n}
    base = curves.get(baseline)
    if not base:
        return out
    for name, c in curves.items():
        if name == baseline:
            continue
        common = [n for n in c if n in base and c[n].shape == base[n].shape]
        out["vs_baseline"][name] = {str(n): stats.paired_difference(y, c[n], base[n]) for n in common}
        numeric = sorted(n for n in common if n != ALL)
        if not numeric:
            continue
        small, large = numeric[0], (ALL if ALL in common else numeric[-1])
        n_large = all_n if large == ALL else large
        benefit = {"start": {**out["vs_baseline"][name][str(small)], "size": small},
                   "asymptote": {**out["vs_baseline"][name][str(large)], "size": large}}
        if n_large and n_large > small:
            doublings = math.log2(n_large / small)
            delta = ((_correct(c[large], y) - _correct(c[small], y))
                     - (_correct(base[large], y) - _correct(base[small], y))) / doublings
            benefit["slope"] = {**stats.paired_delta(y, delta), "from": small, "to": large,
                                "unit": "accuracy per doubling of training images"}
        out["benefit"][name] = benefit
    out["catches_up"] = catches_up(out["vs_baseline"], baseline)
    return out


def all_images_per_class(result: Mapping[str, Any]) -> int | None:
    """Where the data-size point "all" sits: ``data_size_all_per_class`` (the largest class of the
    training pool, recorded by compare), else the largest per-class count in ``data.counts``."""
    recorded = result.get("data_size_all_per_class")
    if is_finite(recorded):
        return int(recorded)
    counts = (result.get("data") or {}).get("counts") or {}
    flat = counts
    if counts and all(isinstance(v, Mapping) for v in counts.values()):
        flat = counts.get("train") or next(iter(counts.values()))
    return max((int(v) for v in flat.values() if is_finite(v)), default=None) if flat else None


def _order(size: Any) -> float:
    return math.inf if size == ALL else float(size)


def catches_up(vs_baseline: Mapping[str, Mapping[str, Mapping[str, Any]]], baseline: str) -> dict[str, Any] | None:
    """Where the baseline stops being measurably worse than the best transfer strategy.

    At each size, the transfer strategy with the largest difference is the one compared. Returns
    ``{"strategy", "size" (smallest size from which no larger size has transfer measurably ahead;
    None if transfer is still ahead with all images), "transfer_wins_at": [sizes]}``.
    """
    sizes = sorted({s for by in vs_baseline.values() for s in by}, key=lambda s: _order(int_or_all(s)))
    if not sizes:
        return None
    best_at = {}
    for s in sizes:
        rows = [(by[s]["diff"], name) for name, by in vs_baseline.items() if s in by]
        if rows:
            best_at[s] = max(rows)[1]
    wins = [s for s in sizes if s in best_at and vs_baseline[best_at[s]][s]["decision"] == stats.A_BETTER]
    if not wins:
        return {"strategy": None, "size": sizes[0], "transfer_wins_at": [], "baseline": baseline}
    last_win = sizes.index(wins[-1])
    size = sizes[last_win + 1] if last_win + 1 < len(sizes) else None
    return {"strategy": best_at[wins[0]], "size": size, "transfer_wins_at": wins, "baseline": baseline}


def int_or_all(size: Any) -> Any:
    return ALL if str(size) == ALL else int(size)


def curve_intervals(evidence: Mapping[str, Any] | None) -> dict[str, dict[Any, tuple[float, float]]]:
    """{strategy: {images per class (int, "all" at its per-class count): (low, high)}} for plot bands."""
    if not evidence:
        return {}
    all_n = evidence.get("all_per_class")
    out: dict[str, dict[Any, tuple[float, float]]] = {}
    for name, pts in evidence["points"].items():
        band = {}
        for size, s in pts.items():
            key = all_n if size == ALL else int(size)
            if key:
                band[key] = (s["accuracy"]["low"], s["accuracy"]["high"])
        out[name] = band
    return out
