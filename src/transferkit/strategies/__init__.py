"""Every transfer strategy behind one interface, looked up by name: the only source of strategy knowledge.

The registry is an explicit table (no registration as an import side effect): a name maps to the
module and class that implement it. Each class declares its description, the classic case it
answers, whether it runs on the feature store, whether its body starts pretrained, and its
parameters with their defaults (``base.Strategy``). The advisor, ``compare``, the demo, the report
and the CLI derive their lists, defaults and descriptions from here.

Adding a strategy: one new module with a ``Strategy`` subclass, and one line in ``STRATEGIES``.
"""

from __future__ import annotations

import difflib
import importlib

from ..errors import ConfigError
from .base import FitContext, FittedModel, Strategy

# name -> (module, class). Order: the four classic cases, the frozen-network variant, the other
# feature-store candidates, the baseline.
STRATEGIES: dict[str, tuple[str, str]] = {
    "linear": ("transferkit.strategies.linear", "LinearStrategy"),
    "intermediate": ("transferkit.strategies.intermediate", "IntermediateStrategy"),
    "hidden": ("transferkit.strategies.hidden", "HiddenStrategy"),
    "head2toe": ("transferkit.strategies.head2toe", "Head2ToeStrategy"),
    "adabn": ("transferkit.strategies.adabn", "AdaBNStrategy"),
    "knn": ("transferkit.strategies.knn", "KnnStrategy"),
    "partial": ("transferkit.strategies.partial", "PartialStrategy"),
    "full": ("transferkit.strategies.full", "FullStrategy"),
    "scratch": ("transferkit.strategies.scratch", "ScratchStrategy"),
}

# The strategy every transfer benefit is measured against.
BASELINE = "scratch"


def _check_name(name: str) -> None:
    if name not in STRATEGIES:
        close = difflib.get_close_matches(str(name), STRATEGIES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"The 'strategy' parameter must be one of {{{', '.join(repr(n) for n in STRATEGIES)}, 'auto'}}. "
            f"Got {name!r} instead.{hint}"
        )


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name``; a ConfigError listing the valid names otherwise."""
    _check_name(name)
    module, cls = STRATEGIES[name]
    return getattr(importlib.import_module(module), cls)


def get_strategy(name: str) -> Strategy:
    """An instance of the strategy called ``name``; a ConfigError listing the valid names otherwise."""
    return strategy_class(name)()


def strategy_names(*, feature_store: bool | None = None, pretrained: bool | None = None,
                   compared_by_default: bool | None = None) -> list[str]:
    """Registered names in registry order, optionally only those with the given declared properties."""
    names = []
    for name in STRATEGIES:
        cls = strategy_class(name)
        if feature_store is not None and cls.uses_feature_store != feature_store:
            continue
        if pretrained is not None and cls.pretrained != pretrained:
            continue
        if compared_by_default is not None and cls.compared_by_default != compared_by_default:
            continue
        names.append(name)
    return names


def strategy_defaults(name: str) -> dict:
    """A copy of the parameters ``name`` declares, with their defaults."""
    return dict(strategy_class(name).defaults)


def describe_strategies() -> list[dict[str, object]]:
    """One row per strategy (name, case, description, feature store, pretrained) for help texts and reports."""
    return [{"name": n, "case": c.case, "description": c.description, "feature_store": c.uses_feature_store,
             "pretrained": c.pretrained} for n in STRATEGIES for c in [strategy_class(n)]]


__all__ = ["BASELINE", "STRATEGIES", "FitContext", "FittedModel", "Strategy", "describe_strategies",
           "get_strategy", "strategy_class", "strategy_defaults", "strategy_names"]
