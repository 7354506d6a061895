"""Report layer: transfer-benefit numbers, figures (PNG) and one self-contained report.html.

Pure functions over plain data (dicts, lists, numpy arrays); see ``html`` for the result schema
and ``benefit`` for the definitions of start, slope, asymptote and crossover.
"""

from .benefit import DEFINITIONS, crossover, curve_numbers, transfer_benefit
from .html import best_strategy, headline, write_report

__all__ = [
    "DEFINITIONS",
    "best_strategy",
    "crossover",
    "curve_numbers",
    "headline",
    "transfer_benefit",
    "write_report",
]
