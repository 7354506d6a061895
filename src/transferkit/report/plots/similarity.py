"""Figures of the advisor's measurements: the per-layer profile and the similarity signals."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ..benefit import is_finite
from .style import NEGATIVE, plt, save


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
    if any(is_finite(v) for v in probe):
        heights = [v if is_finite(v) else 0.0 for v in probe]
        bars = ax.bar(x, heights, color="#4c72b0", alpha=0.85, label="probe accuracy")
        for xi, v in zip(x, probe, strict=True):
            if is_finite(v):
                ax.text(xi, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        handles.append(bars)
        ax.set_ylim(0, 1.08)
    ax.set_ylabel("linear-probe accuracy")
    ax.set_xticks(x)
    ax.set_xticklabels(layers, rotation=30 if len(layers) > 6 else 0, ha="right" if len(layers) > 6 else "center")
    ax.set_xlabel("cut point (shallow → deep)")
    if any(is_finite(v) for v in sim):
        ax2 = ax.twinx()
        ax2.grid(False)
        ax2.spines["right"].set_visible(True)
        sx = [xi for xi, v in zip(x, sim, strict=True) if is_finite(v)]
        sy = [v for v in sim if is_finite(v)]
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
    return save(fig, path)


def plot_similarity(signals: Mapping[str, Any], path: str | Path) -> Path:
    """Horizontal bars, one per similarity signal, each annotated with its value."""
    items = [(str(k), float(v)) for k, v in signals.items() if is_finite(v)]
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
    return save(fig, path)
