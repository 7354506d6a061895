"""Pooled features of a dataset at a backbone's cut points, cached in a keyed on-disk store.

``extract_features(backbone, dataset, layers, store_dir=...) -> FeatureSet`` reads each layer from
the store when its key (everything that determines the numbers) is there, and computes the missing
ones in one forward pass otherwise; ``compute_features`` does the same for in-memory images
without a store. Modules: ``store`` (keys, LayerStore: atomic, resumable chunks, checked HDF5
files, ``write_feature_file``), ``extract`` (the chunk loop, decoding overlapped with inference),
``featureset`` (``FeatureSet``).
"""

from __future__ import annotations

from .extract import DEFAULT_CHUNK_IMAGES, compute_features, default_batch_size, extract_features
from .featureset import FeatureSet
from .store import STORE_FORMAT, LayerStore, StoreWarning, layer_key_meta, write_feature_file

__all__ = [
    "DEFAULT_CHUNK_IMAGES",
    "STORE_FORMAT",
    "FeatureSet",
    "LayerStore",
    "StoreWarning",
    "compute_features",
    "default_batch_size",
    "extract_features",
    "layer_key_meta",
    "write_feature_file",
]
