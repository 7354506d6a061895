"""The one interface every transfer strategy implements.

A strategy says what it freezes, what it trains, whether it can run on cached features,
and which parameter groups get which learning rate. ``fit`` receives everything it needs
in a ``FitContext`` and returns a ``FittedModel`` that predicts from uint8 images and
saves itself as safetensors + JSON.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from ..backbones import Backbone
    from ..data import ImageDataset


@dataclass
class FitContext:
    """What a strategy gets to train with.

    ``dataset`` is the whole dataset; the index arrays say which images play which role.
    ``train`` is what the model may learn from; ``val`` (a stratified part of the training
    data, or the dataset's own val split when it also has a test split) is for model
    selection and early stopping; ``monitor`` is the held-out evaluation split, used only to
    record learning curves for the report, never to choose anything.

    Feature-based strategies extract features for the whole ``dataset`` once (one store
    entry, reused by every strategy and every subset) and index them with these arrays.
    """

    backbone: Backbone
    dataset: ImageDataset
    train_idx: np.ndarray
    val_idx: np.ndarray | None
    monitor_idx: np.ndarray | None
    params: dict[str, Any]
    run_dir: Path
    store_dir: Path
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    progress: bool = True
    resume: bool = False
    # Filled by the strategy as it trains: one dict per epoch (epoch, train_loss, val_loss,
    # val_acc, monitor_acc, lr, seconds); written to the run directory as history.json.
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def train(self) -> ImageDataset:
        return self.dataset.subset(self.train_idx)

    @property
    def val(self) -> ImageDataset | None:
        return None if self.val_idx is None or len(self.val_idx) == 0 else self.dataset.subset(self.val_idx)

    @property
    def monitor(self) -> ImageDataset | None:
        if self.monitor_idx is None or len(self.monitor_idx) == 0:
            return None
        return self.dataset.subset(self.monitor_idx)


MODEL_CONFIG = "model.json"
MODEL_WEIGHTS = "model.safetensors"


def read_model_files(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A saved model's config (JSON) and tensors (safetensors), with a clear error when unfinished."""
    import json

    from safetensors.torch import load_file

    from ..errors import StoreError

    try:
        config = json.loads((Path(directory) / MODEL_CONFIG).read_text())
        tensors = load_file(str(Path(directory) / MODEL_WEIGHTS))
    except (OSError, ValueError) as exc:
        raise StoreError(f"Cannot read the model in {directory}: {exc}. Was the run finished?") from exc
    return config, tensors


class FittedModel(ABC):
    """A trained classifier: backbone part (frozen or fine-tuned) plus head."""

    strategy: str
    classes: list[str]

    @abstractmethod
    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N, C) for uint8 images (N, 3, H, W) at the backbone's input size."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the model's weights (safetensors) and config (JSON) into ``directory``."""

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return self.predict_proba(images, batch_size=batch_size).argmax(axis=1)


class Strategy(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    uses_feature_store: ClassVar[bool]
    # Names of the parameters this strategy reads from FitContext.params, with defaults.
    defaults: ClassVar[dict[str, Any]] = {}

    @abstractmethod
    def fit(self, ctx: FitContext) -> FittedModel: ...

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, backbone: Backbone) -> FittedModel:
        """Rebuild the fitted model saved by ``FittedModel.save`` in ``directory``."""
