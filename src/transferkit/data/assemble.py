"""From the items a loader found to an :class:`ImageDataset`: classes, labels, splits.

Shared by every layout. Files (folders, CSV) are checked for readability here
(``finish_files``); arrays (npz, CIFAR, digits) are hashed per image (``finish_arrays``). When
the source defines no split, ``stratified_dedup_split`` makes one that keeps exact duplicates
together; given splits are kept, and what they lack (test, val) is carved out of train when
asked to.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .dataset import SPLIT_NAMES, ImageDataset, ProgressCallback, item_hash_array
from .files import check_files
from .split import stratified_dedup_split

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def _resolve_classes(found: Sequence[str], declared: Sequence[str] | None, where: str) -> list[str]:
    if declared is None:
        return sorted(set(found))
    declared = [str(c) for c in declared]
    if len(set(declared)) != len(declared):
        raise ConfigError(f"classes={declared!r} lists a class twice.")
    extra = sorted(set(found) - set(declared))
    if extra:
        raise DataError(
            f"{where} has class(es) {extra} that are not in the declared classes {declared}. "
            "Add them to classes= or remove those images."
        )
    return declared


def _split_summary(splits: np.ndarray) -> str:
    return ", ".join(f"{s} {int((splits == s).sum())}" for s in SPLIT_NAMES if (splits == s).any())


def _origin(seed: int, test_fraction: float, val_fraction: float) -> str:
    text = f"stratified-dedup seed={seed} test={test_fraction:g}"
    return text + (f" val={val_fraction:g}" if val_fraction else "")


def finish_files(
    *,
    name: str,
    root: str,
    items: list[tuple[str, str, str | None]],  # (path, class name, split or None)
    declared: Sequence[str] | None,
    where: str,
    split_origin: str | None,
    seed: int,
    test_fraction: float,
    val_fraction: float,
    max_pixels: int,
    skip_placeholders: bool,
    progress: bool | ProgressCallback,
    num_workers: int | None,
    notes: list[str],
    skipped: list[tuple[str, str]] | None = None,
    class_dirs: dict[str, list[str]] | None = None,
) -> ImageDataset:
    skipped = list(skipped or [])
    results = check_files(
        [p for p, _, _ in items],
        max_pixels=max_pixels,
        skip_placeholders=skip_placeholders,
        progress=progress,
        num_workers=num_workers,
        description=f"checking {name}",
    )
    good: list[tuple[str, str, str | None, str]] = []
    for (path, cls, split), (digest, reason) in zip(items, results, strict=True):
        if digest is None:
            skipped.append((path, reason or "unreadable"))
        else:
            good.append((path, cls, split, digest))
    present = sorted({cls for _, cls, _, _ in good})
    if class_dirs is not None:
        for cls, dirs in sorted(class_dirs.items()):
            if cls not in present and (declared is None or cls not in declared):
                notes.append(
                    f"class folder(s) {', '.join(dirs)} hold no readable image; {cls!r} is not made a class"
                )
    classes = _resolve_classes(present, declared, where)
    for c in classes:
        if c not in present:
            notes.append(f"declared class {c!r} has no image")
    if not good:
        detail = f" ({len(skipped)} unreadable, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"{where} holds no readable image{detail}. Point DATA at a folder of images.")
    cindex = {c: i for i, c in enumerate(classes)}
    labels = np.array([cindex[c] for _, c, _, _ in good], dtype=np.int64)
    hashes = [d for _, _, _, d in good]
    sources = [p for p, _, _, _ in good]
    given = [s for _, _, s, _ in good]
    splits, origin = _assign_splits(
        labels, hashes, classes, given, split_origin, seed, test_fraction, val_fraction, notes, where, sources
    )
    return ImageDataset(
        name=name,
        root=root,
        classes=classes,
        labels=labels,
        splits=splits,
        sources=sources,
        hashes=hashes,
        split_origin=origin,
        skipped=skipped,
        notes=notes,
        max_pixels=max_pixels,
    )


def _assign_splits(
    labels: np.ndarray,
    hashes: list[str],
    classes: list[str],
    given: list[str | None],
    split_origin: str | None,
    seed: int,
    test_fraction: float,
    val_fraction: float,
    notes: list[str],
    where: str,
    sources: list[str],
) -> tuple[np.ndarray, str]:
    if all(s is None for s in given):
        splits, more = stratified_dedup_split(
            labels,
            hashes,
            classes,
            seed=seed,
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            sources=sources,
        )
        notes += more
        return splits, _origin(seed, test_fraction, val_fraction)
    splits = np.array([s or "train" for s in given], dtype="<U5")
    origin = split_origin or "given"
    if not (splits == "train").any():
        raise DataError(
            f"{where} has {_split_summary(splits)} images but no 'train' split; add a train/ folder "
            "(or train rows) to learn from."
        )
    train_classes = set(labels[splits == "train"].tolist())
    for s in ("val", "test"):
        lacking = sorted(set(labels[splits == s].tolist()) - train_classes)
        if lacking:
            raise DataError(
                f"{where}: the {s} split has class(es) {[classes[c] for c in lacking]} that the train "
                "split lacks; a model cannot learn them. Add training images for them or remove them "
                f"from {s}."
            )
    empty_train = [classes[c] for c in range(len(classes)) if c not in train_classes]
    if empty_train:
        notes.append(f"class(es) {empty_train} have no training image")
    # Carve what the folders do not provide out of train (dedup-aware), when asked to.
    carve_test = test_fraction if not (splits == "test").any() and not (splits == "val").any() else 0.0
    carve_val = val_fraction if not (splits == "val").any() else 0.0
    if carve_test or carve_val:
        tr = np.flatnonzero(splits == "train")
        sub, more = stratified_dedup_split(
            labels[tr],
            [hashes[i] for i in tr],
            classes,
            seed=seed,
            test_fraction=carve_test,
            val_fraction=carve_val,
            sources=[sources[i] for i in tr],
        )
        splits[tr] = sub
        notes += more
        origin += " + " + _origin(seed, carve_test, carve_val) + " of train"
    return splits, origin


def finish_arrays(
    *,
    name: str,
    root: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str] | None,
    sources: list[str],
    given_splits: list[str] | None,
    split_origin: str,
    declared: Sequence[str] | None,
    seed: int,
    test_fraction: float,
    val_fraction: float,
    notes: list[str],
    where: str,
) -> ImageDataset:
    if class_names is None:
        uniq = np.unique(labels)  # integers in numeric order ("2" before "10"), strings sorted
        names = [str(v) for v in uniq.tolist()]
        classes = names if declared is None else _resolve_classes(names, declared, where)
        cmap = {c: i for i, c in enumerate(classes)}
        label_idx = np.array([cmap[str(v)] for v in labels.tolist()], dtype=np.int64)
    else:
        classes = list(class_names)
        label_idx = labels.astype(np.int64)
        if declared is not None and [str(c) for c in declared] != classes:
            raise DataError(
                f"{where} names its classes {classes}; classes={list(declared)} does not match. "
                "Leave classes= out for this dataset."
            )
    hashes = [item_hash_array(images[i]) for i in range(len(images))]
    splits, origin = _assign_splits(
        label_idx,
        hashes,
        classes,
        given_splits or [None] * len(label_idx),
        split_origin,
        seed,
        test_fraction,
        val_fraction,
        notes,
        where,
        sources,
    )
    return ImageDataset(
        name=name,
        root=root,
        classes=classes,
        labels=label_idx,
        splits=splits,
        sources=sources,
        hashes=hashes,
        split_origin=origin,
        notes=notes,
        array=images,
    )
