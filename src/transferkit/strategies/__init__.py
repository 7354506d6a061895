"""Every transfer strategy behind one interface, looked up by name.

The registry is an explicit table (no registration as an import side effect): a name maps
to the module and class that implement it, imported only when the strategy is used.
"""

from __future__ import annotations

import difflib
import importlib

from ..errors import ConfigError
from .base import FitContext, FittedModel, Strategy

# name -> (module, class). Order is the order of the four classic cases, then the baseline.
STRATEGIES: dict[str, tuple[str, str]] = {
    "linear": ("transferkit.strategies.linear", "LinearStrategy"),
    "intermediate": ("transferkit.strategies.linear", "IntermediateStrategy"),
    "hidden": ("transferkit.strategies.finetune", "HiddenStrategy"),
    "partial": ("transferkit.strategies.finetune", "PartialStrategy"),
    "full": ("transferkit.strategies.finetune", "FullStrategy"),
    "scratch": ("transferkit.strategies.finetune", "ScratchStrategy"),
}


def strategy_names() -> list[str]:
    return list(STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; a ConfigError listing the valid names otherwise."""
    if name not in STRATEGIES:
        close = difflib.get_close_matches(str(name), STRATEGIES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"The 'strategy' parameter must be one of {{{', '.join(repr(n) for n in STRATEGIES)}, 'auto'}}. "
            f"Got {name!r} instead.{hint}"
        )
    module, cls = STRATEGIES[name]
    return getattr(importlib.import_module(module), cls)()


__all__ = ["STRATEGIES", "FitContext", "FittedModel", "Strategy", "get_strategy", "strategy_names"]
