"""``FeatureSet``: the features of every image of a dataset at one or more layers, as returned by
``extract_features``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError


@dataclass
class FeatureSet:
    """Pooled features of every image of a dataset at one or more layers.

    ``features[layer]`` is (N, D) float32 in dataset order; ``labels`` / ``splits`` are the
    dataset's; ``keys[layer]`` is the store key; ``store_paths[layer]`` the final .h5 file;
    ``from_cache`` is True when every layer was read from the store (the network did not run);
    ``computed`` lists the layers this call had to compute; ``runtime`` what ran the network
    ("torch", "openvino", "onnxruntime"; part of the keys).
    """

    features: dict[str, np.ndarray]
    labels: np.ndarray
    splits: np.ndarray
    classes: list[str]
    keys: dict[str, str]
    from_cache: bool
    store_paths: dict[str, Path] = field(default_factory=dict)
    precision: str = "fp32"
    pool: str | int = "avg"
    computed: list[str] = field(default_factory=list)
    runtime: str = "torch"

    @property
    def layers(self) -> list[str]:
        return list(self.features)

    def __len__(self) -> int:
        return len(self.labels)

    def _mask(self, name: str) -> np.ndarray:
        mask = np.asarray(self.splits) == name
        if not mask.any():
            present = sorted(set(np.asarray(self.splits).tolist()))
            raise ConfigError(f"The features have no {name!r} split; splits present: {present}.")
        return mask

    def split(self, name: str, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(X, y) of split ``name`` ("train"/"val"/"test") at ``layer`` (optional with one layer)."""
        if layer is None:
            if len(self.features) != 1:
                raise ConfigError(
                    f"These features hold several layers ({', '.join(self.features)}); pass layer=... "
                    "or use split_all()."
                )
            layer = next(iter(self.features))
        if layer not in self.features:
            raise ConfigError(f"No features for layer {layer!r}; extracted: {', '.join(self.features)}.")
        mask = self._mask(name)
        return self.features[layer][mask], np.asarray(self.labels)[mask]

    def split_all(self, name: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """({layer: X}, y) of split ``name`` for every layer."""
        mask = self._mask(name)
        return {k: v[mask] for k, v in self.features.items()}, np.asarray(self.labels)[mask]
