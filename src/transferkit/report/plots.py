"""The report's figures: matplotlib (Agg backend), one PNG per figure, written atomically.

Every function takes plain data (dicts, lists, numpy arrays), writes ``path`` through
``transferkit.io.atomic_path`` and returns it. Strategies keep one colour across all
figures; ``scratch`` (the random-initialisation baseline) is drawn dashed in grey.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from ..io import atomic_path  # noqa: E402
from .benefit import _finite, _int_keys, crossover, pick_pair  # noqa: E402

DPI = 110
STRATEGY_COLORS = {
    "linear": "#1f77b4",
    "intermediate": "#17becf",
    "hidden": "#9467bd",
    "partial": "#2ca02c",
    "full": "#d62728",
    "scratch": "#555555",
}
_EXTRA = ["#ff7f0e", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f", "#aec7e8"]
NEGATIVE = "#c0392b"
POSITIVE = "#2e7d32"

plt.rcParams.update(
    {
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.frameon": False,
    }
)


def strategy_color(name: str, order: Sequence[str] = ()) -> str:
    if name in STRATEGY_COLORS:
        return STRATEGY_COLORS[name]
    extras = [s for s in order if s not in STRATEGY_COLORS]
    i = extras.index(name) if name in extras else zlib.crc32(name.encode())
    return _EXTRA[i % len(_EXTRA)]


def _style(name: str) -> dict[str, Any]:
    return {"linestyle": "--" if name == "scratch" else "-", "linewidth": 2.0 if name != "scratch" else 1.8}


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
    return path


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    rows = sorted((r for r in history if _finite(r.get(key))), key=lambda r: r.get("epoch", 0))
    xs = [float(r.get("epoch", i + 1)) for i, r in enumerate(rows)]
    return xs, [float(r[key]) for r in rows]


def plot_learning_curves(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | Path,
    *,
    metric: str = "monitor_acc",
    fallback: str = "val_acc",
    title: str | None = None,
) -> Path:
    """Accuracy (``metric``, else ``fallback``) and train loss per epoch, one colour per strategy.

    A strategy fitted in one go (single-entry history) is drawn as a dotted horizontal line
    at its accuracy across the epoch range, marked "(one fit)".
    """
    if not histories:
        raise ConfigError("plot_learning_curves needs at least one strategy history; got none.")
    order = list(histories)
    max_epoch = max((len(h) for h in histories.values()), default=1)
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    used_keys: set[str] = set()
    for name in order:
        hist = histories[name] or []
        color = strategy_color(name, order)
        xs, ys = _series(hist, metric)
        key = metric
        if not ys:
            xs, ys = _series(hist, fallback)
            key = fallback
        if ys:
            used_keys.add(key)
            if len(ys) == 1:
                ax_acc.hlines(ys[0], 1, max(max_epoch, 2), colors=color, linestyles=":", linewidth=2)
                ax_acc.plot([1], ys, "o", color=color, label=f"{name} (one fit)")
            else:
                ax_acc.plot(xs, ys, marker="o", markersize=3, color=color, label=name, **_style(name))
        lx, ly = _series(hist, "train_loss")
        if len(ly) > 1:
            ax_loss.plot(lx, ly, marker="o", markersize=3, color=color, label=name, **_style(name))
    acc_name = " / ".join(sorted(used_keys)) or metric
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel(f"accuracy ({acc_name})")
    ax_acc.set_title("Held-out accuracy per epoch" if metric == "monitor_acc" else f"{metric} per epoch")
    ax_acc.legend(loc="lower right", fontsize=9)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("train loss")
    ax_loss.set_title("Training loss per epoch")
    if ax_loss.lines:
        ax_loss.legend(loc="upper right", fontsize=9)
    else:
        ax_loss.text(0.5, 0.5, "no per-epoch training loss", ha="center", va="center", transform=ax_loss.transAxes)
    for ax in (ax_acc, ax_loss):
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_data_size(
    data_size: Mapping[str, Mapping[Any, float]],
    path: str | Path,
    *,
    probe: str | None = None,
    finetune: str | None = None,
) -> Path:
    """Accuracy against images per class (log x), one line per strategy; the crossover marked.

    ``data_size`` maps strategy -> {images per class: accuracy}. The crossover is computed
    between ``probe`` and ``finetune`` (default: the first probe / fine-tune strategy present).
    """
    curves = {name: _int_keys(curve) for name, curve in data_size.items()}
    curves = {name: c for name, c in curves.items() if c}
    if not curves:
        raise ConfigError("plot_data_size needs at least one strategy with {images per class: accuracy}.")
    auto_probe, auto_fine = pick_pair(curves)
    probe = probe or auto_probe
    finetune = finetune or auto_fine
    order = list(curves)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    all_n: set[int] = set()
    for name, curve in curves.items():
        ns = sorted(curve)
        all_n.update(ns)
        ax.plot(
            ns,
            [curve[n] for n in ns],
            marker="o",
            color=strategy_color(name, order),
            label=name,
            **_style(name),
        )
    ax.set_xscale("log")
    ticks = sorted(all_n)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(n) for n in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training images per class (log scale)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy against training-set size")
    if probe in curves and finetune in curves:
        n_star = crossover(curves[probe], curves[finetune])
        if n_star is not None:
            ax.axvline(n_star, color="black", linestyle=":", linewidth=1.2)
            ax.annotate(
                f"{finetune} overtakes {probe}\nat ≈{n_star} images/class",
                xy=(n_star, 0.02),
                xycoords=("data", "axes fraction"),
                xytext=(6, 6),
                textcoords="offset points",
                fontsize=9,
            )
        else:
            ax.text(
                0.02,
                0.02,
                f"{finetune} never overtakes {probe} in this range",
                transform=ax.transAxes,
                fontsize=9,
            )
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_layer_profile(per_layer: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Probe accuracy per cut point (bars, left axis) and the similarity signal per layer (line, right).

    ``per_layer`` maps layer name (shallow -> deep, in insertion order) -> ``{"probe_acc": float,
    "bn_similarity": float}``; either key may be missing.
    """
    layers = list(per_layer)
    if not layers:
        raise ConfigError("plot_layer_profile needs at least one layer; got none.")
    probe = [per_layer[name].get("probe_acc") for name in layers]
    sim = [per_layer[name].get("bn_similarity") for name in layers]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(layers) + 2), 4.2))
    handles = []
    if any(_finite(v) for v in probe):
        heights = [v if _finite(v) else 0.0 for v in probe]
        bars = ax.bar(x, heights, color="#4c72b0", alpha=0.85, label="probe accuracy")
        for xi, v in zip(x, probe, strict=True):
            if _finite(v):
                ax.text(xi, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        handles.append(bars)
        ax.set_ylim(0, 1.08)
    ax.set_ylabel("linear-probe accuracy")
    ax.set_xticks(x)
    ax.set_xticklabels(layers, rotation=30 if len(layers) > 6 else 0, ha="right" if len(layers) > 6 else "center")
    ax.set_xlabel("cut point (shallow → deep)")
    if any(_finite(v) for v in sim):
        ax2 = ax.twinx()
        ax2.grid(False)
        ax2.spines["right"].set_visible(True)
        sx = [xi for xi, v in zip(x, sim, strict=True) if _finite(v)]
        sy = [v for v in sim if _finite(v)]
        (line,) = ax2.plot(sx, sy, color="#dd8452", marker="s", linewidth=2, label="BN-statistics similarity")
        ax2.set_ylabel("similarity to source data")
        if min(sy) >= 0 and max(sy) <= 1:  # a [0, 1] score: same scale as accuracy, no zoomed-in drama
            ax2.set_ylim(0, 1.08)
        handles.append(line)
    ax.set_title("Per-layer profile: where the backbone's features fit this data")
    if handles:
        ax.legend(
            handles=handles,
            labels=[h.get_label() for h in handles],
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=len(handles),
            fontsize=9,
        )
    fig.tight_layout()
    return _save(fig, path)


def plot_similarity(signals: Mapping[str, Any], path: str | Path) -> Path:
    """Horizontal bars, one per similarity signal, each annotated with its value."""
    items = [(str(k), float(v)) for k, v in signals.items() if _finite(v)]
    if not items:
        raise ConfigError("plot_similarity needs at least one numeric signal; got none.")
    names = [k for k, _ in items]
    vals = [v for _, v in items]
    fig, ax = plt.subplots(figsize=(7.0, 0.5 * len(items) + 1.4))
    y = np.arange(len(items))
    ax.barh(y, vals, color=["#4c72b0" if v >= 0 else NEGATIVE for v in vals])
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    span = max(abs(v) for v in vals) or 1.0
    for yi, v in zip(y, vals, strict=True):
        ax.text(
            v + (0.01 * span if v >= 0 else -0.01 * span),
            yi,
            f"{v:.3g}",
            va="center",
            ha="left" if v >= 0 else "right",
            fontsize=9,
        )
    lo = min(0.0, min(vals))
    hi = max(0.0, max(vals))
    ax.set_xlim(lo - 0.15 * span * (lo < 0), hi + 0.18 * span)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_title("Similarity of this data to the backbone's source data")
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    classes: Sequence[str] | None,
    path: str | Path,
    *,
    title: str = "Confusion matrix",
) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class).

    Colour is the fraction of each true class; with at most 20 classes each cell also shows
    its count. Class names label the axes when there are at most 50 classes.
    """
    cm = np.asarray(matrix, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ConfigError(f"confusion matrix must be square (C, C); got shape {cm.shape}.")
    n = cm.shape[0]
    classes = list(classes) if classes is not None and len(classes) == n else [str(i) for i in range(n)]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = min(12.0, max(4.5, 0.45 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.grid(False)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if n <= 50:
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(
            [_short(c) for c in classes],
            rotation=45 if n > 4 else 0,
            ha="right" if n > 4 else "center",
            fontsize=9 if n <= 20 else 7,
        )
        ax.set_yticklabels([_short(c) for c in classes], fontsize=9 if n <= 20 else 7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j] == 0 and i != j:
                    continue
                count = int(cm[i, j]) if float(cm[i, j]).is_integer() else cm[i, j]
                ax.text(
                    j,
                    i,
                    f"{count}",
                    ha="center",
                    va="center",
                    fontsize=9 if n <= 12 else 7,
                    color="white" if norm[i, j] > 0.55 else "black",
                )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


def _short(text: str, limit: int = 18) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _to_hwc(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 3:  # (N, H, W) grayscale
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 4:
        raise ConfigError(f"images must be (N,3,H,W), (N,H,W,3) or (N,H,W); got shape {arr.shape}.")
    if arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def plot_misclassified(
    images: np.ndarray,
    true_labels: Sequence[Any],
    pred_labels: Sequence[Any],
    path: str | Path,
    *,
    classes: Sequence[str] | None = None,
    max_images: int = 24,
) -> Path:
    """A grid of up to ``max_images`` misclassified images captioned "true → pred".

    ``images``: uint8 (N,3,H,W), (N,H,W,3) or (N,H,W). Labels are class indices (looked up in
    ``classes``) or names.
    """
    arr = _to_hwc(images)
    n = min(len(arr), len(true_labels), len(pred_labels), max_images)
    if n == 0:
        raise ConfigError("plot_misclassified needs at least one image with its true and predicted label.")

    def name(label: Any) -> str:
        if classes is not None and isinstance(label, int | np.integer) and 0 <= int(label) < len(classes):
            return str(classes[int(label)])
        return str(label)

    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.15 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(arr[k], interpolation="nearest" if arr.shape[1] < 64 else "antialiased")
        ax.set_title(
            f"{_short(name(true_labels[k]), 12)} → {_short(name(pred_labels[k]), 12)}",
            fontsize=8,
            color=NEGATIVE,
        )
    fig.suptitle("Misclassified examples (true → predicted)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_benefit(benefit: Mapping[str, Any], path: str | Path) -> Path:
    """Three panels of bars: start, slope and asymptote of each strategy minus the baseline's, in points.

    ``benefit`` is the output of ``transfer_benefit``; negative bars are red.
    """
    rows = {name: r for name, r in benefit.get("strategies", {}).items() if r.get("delta")}
    if not rows:
        raise ConfigError("plot_benefit needs a transfer_benefit result with a baseline to compare with.")
    baseline = benefit.get("baseline", "scratch")
    names = list(rows)
    panels = [
        ("start", "start (points)"),
        ("slope", "slope (points / epoch)"),
        ("asymptote", "asymptote (points)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(11, 0.45 * len(names) + 2.2), sharey=True)
    y = np.arange(len(names))
    for ax, (key, label) in zip(axes, panels, strict=True):
        raw = [rows[n]["delta"].get(key) for n in names]
        vals = [100.0 * v if _finite(v) else 0.0 for v in raw]
        ax.barh(y, vals, color=[POSITIVE if v >= 0 else NEGATIVE for v in vals], height=0.6)
        ax.axvline(0, color="black", linewidth=0.8)
        span = max([abs(v) for v in vals] + [1.0])
        ax.set_xlim(min(0.0, min(vals)) - 0.3 * span, max(0.0, max(vals)) + 0.3 * span)
        for yi, v, r in zip(y, vals, raw, strict=True):
            ax.text(
                v,
                yi,
                f" {v:+.1f} " if _finite(r) else " n/a (one fit)",
                va="center",
                ha="left" if v >= 0 else "right",
                fontsize=9,
                color="black" if _finite(r) else "#777777",
            )
        ax.set_title(f"Δ {label}")
        ax.grid(axis="y", visible=False)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names)
    axes[0].invert_yaxis()
    fig.suptitle(f"Transfer benefit over {baseline} (positive = pretrained is better)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
