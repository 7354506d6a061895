"""The part each registered strategy plays in a report: the baseline, a probe or a fine-tune.

Names, their order and the baseline come from the strategy registry (``transferkit.strategies``),
so a strategy added there is drawn, coloured and paired without touching the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..strategies import BASELINE, strategy_names

__all__ = ["BASELINE", "finetune_strategies", "pick_pair", "probe_strategies"]


def probe_strategies() -> tuple[str, ...]:
    """Strategies that train only a head on stored features of the frozen backbone (registry order)."""
    return tuple(strategy_names(feature_store=True))


def finetune_strategies() -> tuple[str, ...]:
    """Strategies that train the pretrained network itself (registry order; the baseline excluded)."""
    return tuple(strategy_names(feature_store=False, pretrained=True))


def pick_pair(data_size: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The probe and fine-tune strategies of a data-size result to compare (first present of each)."""
    probe = next((s for s in probe_strategies() if s in data_size), None)
    fine = next((s for s in finetune_strategies() if s in data_size), None)
    return probe, fine
