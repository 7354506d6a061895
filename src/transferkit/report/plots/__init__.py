"""The report's figures: matplotlib (Agg backend), one PNG per figure, written atomically.

Every function takes plain data (dicts, lists, numpy arrays), writes ``path`` through
``transferkit.io.atomic_path`` and returns it. Strategies keep one colour across all
figures; the baseline (``scratch``, random initialisation) is drawn dashed in grey.

``style`` holds what every figure shares; one module per kind of figure:
``curves`` (learning curves, transfer benefit, data size), ``similarity`` (per-layer profile,
similarity signals), ``mistakes`` (confusion matrix, misclassified images).
"""

from .curves import plot_benefit, plot_data_size, plot_learning_curves
from .mistakes import plot_confusion, plot_misclassified
from .similarity import plot_layer_profile, plot_similarity
from .style import DPI, NEGATIVE, POSITIVE, STRATEGY_COLORS, strategy_color

__all__ = [
    "DPI",
    "NEGATIVE",
    "POSITIVE",
    "STRATEGY_COLORS",
    "plot_benefit",
    "plot_confusion",
    "plot_data_size",
    "plot_layer_profile",
    "plot_learning_curves",
    "plot_misclassified",
    "plot_similarity",
    "strategy_color",
]
