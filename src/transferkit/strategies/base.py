"""The one interface every transfer strategy implements.

A strategy says what it freezes, what it trains, whether it can run on cached features,
and which parameter groups get which learning rate. ``fit`` receives everything it needs
in a ``FitContext`` and returns a ``FittedModel`` that predicts from uint8 images and
saves itself as safetensors + JSON.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from ..backbones import Backbone
    from ..data import ImageDataset
    from ..runtime import CacheLayout


@dataclass
class FitContext:
    """What a strategy gets to train with.

    ``dataset`` is the whole dataset; the index arrays say which images play which role.
    ``train`` is what the model may learn from; ``val`` (a stratified part of the training
    data, or the dataset's own val split when it also has a test split) is for model
    selection and early stopping; ``monitor`` is the held-out evaluation split, used only to
    record learning curves for the report, never to choose anything.

    Feature-based strategies extract features for the whole ``dataset`` once (one store
    entry in ``cache.features``, reused by every strategy and every subset) and index them with
    these arrays; network strategies decode it once into ``cache.decoded``.
    """

    backbone: Backbone
    dataset: ImageDataset
    train_idx: np.ndarray
    val_idx: np.ndarray | None
    monitor_idx: np.ndarray | None
    params: dict[str, Any]
    run_dir: Path
    cache: CacheLayout
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    progress: bool = True
    resume: bool = False
    # Filled by the strategy as it trains: one dict per epoch (epoch, train_loss, val_loss,
    # val_acc, monitor_acc, lr, seconds); written to the run directory as history.json.
    history: list[dict[str, float]] = field(default_factory=list)
    # Network strategies only: called with the history after every epoch; False stops training
    # there (``auto``'s trials stop a fine-tune that is not on course to win; the engine keeps
    # the checkpoint, so the same call with ``resume=True`` continues it).
    keep_going: Callable[[list[dict[str, Any]]], bool] | None = None

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


# A saved model is a directory with these two files (every strategy; run_dir/model/).
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


def check_backbone_weights(config: dict[str, Any], backbone: Backbone, directory: Path) -> None:
    """Refuse to rebuild a frozen-backbone model on other weights than it was trained on."""
    from ..errors import StoreError

    if config.get("backbone_weights_hash") != backbone.weights_hash:
        raise StoreError(
            f"The model in {directory} was trained on backbone weights {config.get('backbone_weights_hash')!r} "
            f"but {backbone.spec!r} now has weights {backbone.weights_hash!r}. Point --backbone at the "
            "weights the run used."
        )


class FittedModel(ABC):
    """A trained classifier: backbone part (frozen or fine-tuned) plus head.

    Everything callers use is declared here: the API predicts and saves through it, ``export``
    turns ``to_module()`` into ONNX / TorchScript, and reports read ``info``.
    """

    strategy: str
    classes: list[str]
    backbone: Backbone
    # What the fit measured and chose (C, layer profile, epochs run, head init...): JSON-able.
    info: dict[str, Any]

    @abstractmethod
    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N, C) for uint8 images (N, 3, H, W) at the backbone's input size."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the model's weights (safetensors) and config (JSON) into ``directory``."""

    @abstractmethod
    def to_module(self) -> torch.nn.Module:
        """One module, float images 0..255 (B, 3, H, W) -> logits (B, C), normalisation inside (export)."""

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return self.predict_proba(images, batch_size=batch_size).argmax(axis=1)


class Strategy(ABC):
    """What a strategy declares about itself; everything else in transferkit reads it from here.

    The advisor, ``compare``, the demo, the report and the CLI's help take names, cases,
    descriptions and defaults from these attributes (through the registry in ``__init__``),
    never from copies of their own.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    # The classic case it answers, as the four-case table says it ("small & similar" ...).
    case: ClassVar[str]
    uses_feature_store: ClassVar[bool]
    # False only for the baseline that transfer is measured against (random initialisation).
    pretrained: ClassVar[bool] = True
    # Part of `compare`'s default sweep (hidden is opt-in: it rarely differs from linear).
    compared_by_default: ClassVar[bool] = True
    # Order of preference among candidates that score alike (``auto``'s one-standard-error rule
    # takes the lowest): how much the strategy fits or chooses beyond a linear map of frozen features.
    complexity: ClassVar[int] = 0
    # Scoring it costs a forward pass of its own over the dataset (not the shared feature store):
    # ``auto`` scores it only on data the advisor measured as different from the source.
    own_forward_pass: ClassVar[bool] = False
    # The parameters this strategy reads from FitContext.params, with their defaults.
    defaults: ClassVar[dict[str, Any]] = {}

    @abstractmethod
    def fit(self, ctx: FitContext) -> FittedModel: ...

    @classmethod
    def check_params(cls, params: dict[str, Any], source: str) -> None:
        """Raise a ConfigError when ``params`` names a parameter this strategy does not declare."""
        from ..errors import ConfigError

        unknown = sorted(set(params) - set(cls.defaults))
        if unknown:
            raise ConfigError(
                f"{source} set {unknown} for strategy {cls.name!r}, which declares only "
                f"{sorted(cls.defaults)}."
            )

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, backbone: Backbone) -> FittedModel:
        """Rebuild the fitted model saved by ``FittedModel.save`` in ``directory``."""
