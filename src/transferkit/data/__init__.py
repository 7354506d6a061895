"""Datasets: loading every supported layout, readability checks, splits, roles, fingerprints, decoding.

See docs/ARCHITECTURE.md ("data") for the contract, ``loaders`` (one module per layout) /
``images`` / ``dataset`` for the decisions taken on odd images and odd datasets, and ``roles``
for which images train, select and are scored.
"""

from __future__ import annotations

from .dataset import ImageDataset
from .images import IMAGE_EXTENSIONS, INTERPOLATIONS, load_image_uint8, to_rgb
from .loaders import UnsafeDataPathError, list_image_files, load_dataset
from .ops import align_classes, filter_classes, per_class_subset
from .roles import Roles, duplicate_report, split_roles, train_indices
from .split import stratified_dedup_split

__all__ = [
    "IMAGE_EXTENSIONS",
    "INTERPOLATIONS",
    "ImageDataset",
    "Roles",
    "UnsafeDataPathError",
    "align_classes",
    "duplicate_report",
    "filter_classes",
    "list_image_files",
    "load_dataset",
    "load_image_uint8",
    "per_class_subset",
    "split_roles",
    "stratified_dedup_split",
    "to_rgb",
    "train_indices",
]
