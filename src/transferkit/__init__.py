"""transferkit: transfer learning for CNN image classifiers as a measured decision.

Measure the dataset, decide the strategy, run it on a feature store or a real training
engine, and prove what transfer bought against training from scratch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import TransferClassifier

__all__ = ["TransferClassifier", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import transferkit.features` in a worker does not pay for the API.
    if name == "TransferClassifier":
        from .api import TransferClassifier

        return TransferClassifier
    raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
