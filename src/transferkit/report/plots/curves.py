"""Figures that compare strategies over time and data: learning curves, transfer benefit, data size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ..benefit import crossover, int_keys, is_finite
from ..roles import BASELINE, pick_pair
from .style import NEGATIVE, NEUTRAL, POSITIVE, line_style, plt, save, strategy_color


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    rows = sorted((r for r in history if is_finite(r.get(key))), key=lambda r: r.get("epoch", 0))
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
                ax_acc.plot(xs, ys, marker="o", markersize=3, color=color, label=name, **line_style(name))
        lx, ly = _series(hist, "train_loss")
        if len(ly) > 1:
            ax_loss.plot(lx, ly, marker="o", markersize=3, color=color, label=name, **line_style(name))
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
    return save(fig, path)


def plot_data_size(
    data_size: Mapping[str, Mapping[Any, float]],
    path: str | Path,
    *,
    probe: str | None = None,
    finetune: str | None = None,
    bands: Mapping[str, Mapping[int, tuple[float, float]]] | None = None,
) -> Path:
    """Accuracy against images per class (log x), one line per strategy; the crossover marked.

    ``bands`` maps strategy -> {images per class: (low, high)}: each line's 95% interval, drawn
    as a shaded band (from ``report.evidence.curve_intervals``).

    ``data_size`` maps strategy -> {images per class: accuracy}. The crossover is computed
    between ``probe`` and ``finetune`` (default: the first probe / fine-tune strategy present).
    """
    curves = {name: int_keys(curve) for name, curve in data_size.items()}
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
            **line_style(name),
        )
        band = (bands or {}).get(name) or {}
        bn = [n for n in ns if n in band and all(is_finite(v) for v in band[n])]
        if len(bn) >= 2:
            ax.fill_between(bn, [band[n][0] for n in bn], [band[n][1] for n in bn],
                            color=strategy_color(name, order), alpha=0.15, linewidth=0)
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
    return save(fig, path)


def plot_benefit(benefit: Mapping[str, Any], path: str | Path) -> Path:
    """Three panels of bars: start, slope and asymptote of each strategy minus the baseline's, in points.

    ``benefit`` is the output of ``transfer_benefit``. A strategy's bars are green or red only when
    the paired test of its final accuracy against the baseline is significant (``decision``), grey
    otherwise: an untested or within-noise difference is not coloured as a win or a loss.
    """
    rows = {name: r for name, r in benefit.get("strategies", {}).items() if r.get("delta")}
    if not rows:
        raise ConfigError("plot_benefit needs a transfer_benefit result with a baseline to compare with.")
    baseline = benefit.get("baseline", BASELINE)
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
        vals = [100.0 * v if is_finite(v) else 0.0 for v in raw]
        colours = [POSITIVE if rows[n].get("decision") == "a_better" else
                   NEGATIVE if rows[n].get("negative_transfer") else NEUTRAL for n in names]
        ax.barh(y, vals, color=colours, height=0.6)
        ax.axvline(0, color="black", linewidth=0.8)
        span = max([abs(v) for v in vals] + [1.0])
        ax.set_xlim(min(0.0, min(vals)) - 0.3 * span, max(0.0, max(vals)) + 0.3 * span)
        for yi, v, r in zip(y, vals, raw, strict=True):
            ax.text(
                v,
                yi,
                f" {v:+.1f} " if is_finite(r) else " n/a (one fit)",
                va="center",
                ha="left" if v >= 0 else "right",
                fontsize=9,
                color="black" if is_finite(r) else "#777777",
            )
        ax.set_title(f"Δ {label}")
        ax.grid(axis="y", visible=False)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names)
    axes[0].invert_yaxis()
    fig.suptitle(f"Transfer benefit over {baseline} on the learning curves (positive = pretrained is ahead; "
                 "green/red only where the paired test of final accuracy is significant)", fontsize=10)
    fig.tight_layout()
    return save(fig, path)
