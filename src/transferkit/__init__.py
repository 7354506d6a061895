"""transferkit: transfer learning for CNN image classifiers as a measured decision.

Measure the dataset, decide the strategy, run it on a feature store or a real training
engine, and prove what transfer bought against training from scratch.
"""

__version__ = "0.1.0"

from .api import TransferClassifier  # noqa: E402  (the version must exist before submodules import it)

__all__ = ["TransferClassifier", "__version__"]
