"""Deterministic dataset subsetting used by data-size curves and few-shot / class-split tasks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .dataset import ImageDataset
from .roles import per_class_pick


def per_class_subset(dataset: ImageDataset, n_per_class: int, seed: int = 0) -> ImageDataset:
    """At most ``n_per_class`` items of every class, chosen with ``seed``; original order kept.

    Nested: for one seed, the subset for n is contained in the subset for any larger n
    (:func:`transferkit.data.roles.per_class_pick`), so data-size curves add data rather than
    redraw it. Classes with fewer items contribute all of theirs. Apply it to the
    split you mean (``dataset.split("train")``).
    """
    if int(n_per_class) < 1:
        raise ConfigError(f"n_per_class={n_per_class!r} must be >= 1.")
    return dataset.subset(per_class_pick(np.arange(len(dataset)), dataset.labels, n_per_class, seed))


def filter_classes(dataset: ImageDataset, class_names: Sequence[str], relabel: bool = True) -> ImageDataset:
    """Only the items of ``class_names``.

    ``relabel=True``: ``classes`` becomes ``class_names`` in the given order and labels are
    renumbered 0..K-1 (e.g. digits "0".."4" as a source task, "5".."9" as a target task).
    ``relabel=False``: the class list and label numbers are kept.
    """
    names = [str(c) for c in class_names]
    if isinstance(class_names, str) or not names:
        raise ConfigError(f"class_names={class_names!r} must be a non-empty list of class names.")
    if len(set(names)) != len(names):
        raise ConfigError(f"class_names={names} lists a class twice.")
    unknown = [c for c in names if c not in dataset.classes]
    if unknown:
        raise DataError(f"{dataset.name!r} has no class {unknown}; its classes are {dataset.classes}.")
    old = [dataset.classes.index(c) for c in names]
    keep = np.flatnonzero(np.isin(dataset.labels, old))
    sub = dataset.subset(keep)
    if not relabel:
        return sub
    remap = np.full(len(dataset.classes), -1, dtype=np.int64)
    remap[old] = np.arange(len(old))
    return relabelled(sub, names, remap[sub.labels])


def align_classes(dataset: ImageDataset, classes: Sequence[str]) -> ImageDataset:
    """``dataset`` relabelled into the class order ``classes`` (a superset of its own classes).

    Used to score a model on data whose folders list only some of the model's classes, or in
    another order. A class of the data that ``classes`` lacks is a DataError naming it.
    """
    names = [str(c) for c in classes]
    unknown = sorted(set(dataset.classes) - set(names))
    if unknown:
        raise DataError(f"{dataset.name!r} has classes {unknown} that are not among {names}.")
    remap = np.array([names.index(c) for c in dataset.classes], dtype=np.int64)
    return relabelled(dataset, names, remap[dataset.labels] if len(dataset.labels) else dataset.labels)


def relabelled(dataset: ImageDataset, classes: list[str], labels: np.ndarray) -> ImageDataset:
    """The same images, sources and splits under a new class list and label numbers."""
    return ImageDataset(
        name=dataset.name,
        root=dataset.root,
        classes=classes,
        labels=labels,
        splits=dataset.splits,
        sources=dataset.sources,
        hashes=dataset._hashes,
        split_origin=dataset.split_origin,
        skipped=dataset.skipped,
        notes=dataset.notes,
        array=dataset._array,
        index=dataset._index,
        max_pixels=dataset._max_pixels,
    )
