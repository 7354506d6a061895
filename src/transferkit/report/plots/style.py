"""What every report figure shares: the Agg backend, the look, strategy colours and atomic saving.

pyplot is imported here and only here (other plot modules take ``plt`` from this module), so
the non-interactive Agg backend is chosen before pyplot loads, whichever figure is drawn first.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ...io import atomic_path  # noqa: E402
from ...strategies import strategy_names  # noqa: E402
from ..roles import BASELINE  # noqa: E402

DPI = 110
NEGATIVE = "#c0392b"
POSITIVE = "#2e7d32"
NEUTRAL = "#9aa5b1"  # a difference no test has shown to be real
BASELINE_COLOR = "#555555"
# Handed out in registry order to every strategy but the baseline, then to names the registry
# does not know (in the order a figure lists them).
PALETTE = [
    "#1f77b4", "#17becf", "#9467bd", "#2ca02c", "#d62728",
    "#ff7f0e", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f", "#aec7e8",
]  # fmt: skip


_PRETRAINED = [name for name in strategy_names() if name != BASELINE]
# One colour per registered strategy, the same in every figure.
STRATEGY_COLORS = {
    name: BASELINE_COLOR if name == BASELINE else PALETTE[_PRETRAINED.index(name) % len(PALETTE)]
    for name in strategy_names()
}
# For names the registry does not know: the colours no registered strategy took.
_SPARE = PALETTE[len(_PRETRAINED) :] or PALETTE

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
    """The strategy's colour; a name outside the registry gets a spare one (stable for a given ``order``)."""
    if name in STRATEGY_COLORS:
        return STRATEGY_COLORS[name]
    extras = [s for s in order if s not in STRATEGY_COLORS]
    i = extras.index(name) if name in extras else zlib.crc32(name.encode())
    return _SPARE[i % len(_SPARE)]


def line_style(name: str) -> dict[str, Any]:
    """The baseline dashed and a little thinner, so the pretrained strategies stand out."""
    baseline = name == BASELINE
    return {"linestyle": "--" if baseline else "-", "linewidth": 1.8 if baseline else 2.0}


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and close it."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
    return path


def shorten(text: str, limit: int = 18) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["DPI", "NEGATIVE", "POSITIVE", "STRATEGY_COLORS", "line_style", "plt", "save", "shorten", "strategy_color"]
