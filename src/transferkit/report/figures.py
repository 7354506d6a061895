"""Draws every figure a result has data for, with the caption the page shows under it.

A figure that cannot be drawn from malformed data is warned about and listed (with the reason)
instead of failing the whole report.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import TransferkitError
from . import plots
from .evidence import curve_intervals, size_evidence_of
from .findings import crossover_sentence, data_size_curves, similarity_view
from .markup import esc, img_tag
from .roles import BASELINE

_PLOT_ERRORS = (TransferkitError, ValueError, TypeError, KeyError, IndexError)


class Figures:
    """Draws figures, keeps (section, html) pairs and the reasons a figure was not drawn."""

    def __init__(self, plot_dir: Path) -> None:
        self.plot_dir = plot_dir
        self.items: dict[str, str] = {}
        self.paths: dict[str, Path] = {}
        self.failed: list[tuple[str, str]] = []

    def draw(self, key: str, title: str, caption: str, fn, /, *args, **kwargs) -> None:
        path = self.plot_dir / f"{key}.png"
        try:
            fn(*args, path=path, **kwargs)
        except _PLOT_ERRORS as exc:
            warnings.warn(f"report figure {key!r} not drawn: {exc}", stacklevel=3)
            self.failed.append((title, f"{type(exc).__name__}: {exc}"))
            return
        self.paths[key] = path
        self.items[key] = (
            f'<figure id="fig-{esc(key)}">{img_tag(path, title)}'
            f"<figcaption><strong>{esc(title)}.</strong> {caption}</figcaption></figure>"
        )


def draw_figures(
    result: Mapping[str, Any],
    benefit: Mapping[str, Any] | None,
    best: str | None,
    out_dir: Path,
    misclassified_images: Mapping[str, Any] | None,
) -> Figures:
    figs = Figures(out_dir / "plots")
    strategies = result.get("strategies") or {}
    classes = (result.get("data") or {}).get("classes")
    histories = {n: s.get("history") for n, s in strategies.items() if s and s.get("history")}
    metric = (benefit or {}).get("metric", "monitor_acc")
    if histories:
        figs.draw(
            "learning_curves",
            "Learning curves",
            f"Left: accuracy per epoch ({esc(metric)}; held-out data, never used to choose anything) for "
            "every "
            "strategy; right: training loss. Scratch (random initialisation) is dashed; a strategy fitted in "
            "one go is a dotted line at its accuracy.",
            plots.plot_learning_curves,
            histories,
            metric=metric,
        )
    if benefit and any(r.get("delta") for r in benefit.get("strategies", {}).values()):
        figs.draw(
            "benefit",
            "Transfer benefit",
            f"Start, slope and asymptote of each strategy's learning curve minus "
            f"{esc(benefit.get('baseline', BASELINE))}'s (first draw), in "
            "points (1 point = 0.01 accuracy). Green / red bars: the paired test of final held-out accuracy says "
            "the pretrained strategy is better / worse; grey: no measurable difference or untested.",
            plots.plot_benefit,
            benefit,
        )
    curves = data_size_curves(result)
    if curves:
        text = crossover_sentence(curves)
        where = f" {esc(text)}" if text else ""
        figs.draw(
            "data_size",
            "Data-size curves",
            "Accuracy against training images per class (log scale), each model retrained on a stratified "
            "subset; lines are means over draws, shaded bands their 95% intervals (where draws were recorded)."
            + where,
            plots.plot_data_size,
            curves,
            bands=curve_intervals(size_evidence_of(result)),
        )
    advisor = result.get("advisor") or {}
    similarity = similarity_view(advisor)
    per_layer = similarity["per_layer"]
    if per_layer:
        figs.draw(
            "layer_profile",
            "Per-layer profile",
            "Bars: accuracy of a linear probe on features cut at each layer (shallow to deep). Line: how "
            "closely this data's activation statistics match the backbone's source data at that layer.",
            plots.plot_layer_profile,
            per_layer,
        )
    signals = similarity["signals"]
    if signals:
        figs.draw(
            "similarity",
            "Similarity signals",
            "The advisor's measurements of how similar this data is to the backbone's source data."
            + (f" {esc(similarity['definition'])}" if similarity.get("definition") else ""),
            plots.plot_similarity,
            signals,
        )
    if best:
        cm = (strategies.get(best) or {}).get("metrics", {}).get("confusion_matrix")
        if cm:
            figs.draw(
                "confusion",
                f"Confusion matrix ({best})",
                f"Rows: true class, columns: predicted class, for {esc(best)} on the scored split. Colour: "
                "fraction of the true class; numbers: image counts.",
                plots.plot_confusion,
                cm,
                classes,
                title=f"Confusion matrix — {best}",
            )
    if misclassified_images is not None:
        who = misclassified_images.get("strategy") or best or ""
        figs.draw(
            "misclassified",
            "Misclassified images",
            f"Up to 24 images from the scored split that {esc(who)} got wrong, captioned true → predicted.",
            plots.plot_misclassified,
            misclassified_images.get("images"),
            misclassified_images.get("true", []),
            misclassified_images.get("pred", []),
            classes=classes,
        )
    return figs
