"""The part each registered strategy plays in a report: the baseline, a probe or a fine-tune.

Names and their order come from the strategy registry (``transferkit.strategies``), so a
strategy added there is drawn, coloured and paired without touching the report.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from ..strategies import get_strategy, strategy_names

# Transfer benefit is measured against the same network trained from random initialisation.
BASELINE = "scratch"


@functools.cache
def _trains_on_stored_features() -> dict[str, bool]:
    # Cached and lazy: asking a strategy imports its implementation (torch), which a report that
    # draws no data-size curve never needs.
    return {name: get_strategy(name).uses_feature_store for name in strategy_names()}


def probe_strategies() -> tuple[str, ...]:
    """Strategies that train only a head on stored features of the frozen backbone (registry order)."""
    return tuple(name for name, stored in _trains_on_stored_features().items() if stored)


def finetune_strategies() -> tuple[str, ...]:
    """Strategies that train the pretrained network itself (registry order; the baseline excluded)."""
    return tuple(name for name, stored in _trains_on_stored_features().items() if not stored and name != BASELINE)


def pick_pair(data_size: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The probe and fine-tune strategies of a data-size result to compare (first present of each)."""
    probe = next((s for s in probe_strategies() if s in data_size), None)
    fine = next((s for s in finetune_strategies() if s in data_size), None)
    return probe, fine
