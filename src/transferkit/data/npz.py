"""``.npz`` archives: ``images``/``labels`` (+ optional class names), or MedMNIST-style
``train_images``/``train_labels`` (+ ``val_*``, ``test_*``) giving the splits.

Arrays come in many layouts and dtypes; ``to_uint8_images`` turns them into (N, H, W)
grayscale or (N, H, W, 3) RGB uint8. Object arrays are refused (reading them needs pickle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, UnsafeFileError
from .assemble import finish_arrays
from .dataset import ImageDataset


def to_uint8_images(images: np.ndarray, where: str) -> np.ndarray:
    """(N,H,W) grayscale or (N,H,W,3) RGB uint8 from the layouts and dtypes arrays come in."""
    a = np.asarray(images)
    if a.ndim == 4 and a.shape[-1] not in (1, 3, 4) and a.shape[1] in (1, 3, 4):
        a = a.transpose(0, 2, 3, 1)  # channels-first
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 3 or (a.ndim == 4 and a.shape[-1] in (3, 4))):
        raise DataError(
            f"{where}: images have shape {a.shape}; expected (N, H, W) grayscale or (N, H, W, 3) RGB."
        )
    if a.dtype == np.uint8:
        pass
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = np.rint(a / 257.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        f = np.nan_to_num(a.astype(np.float64))
        if f.size and f.max() <= 1.0:
            f = f * 255.0
        a = np.rint(np.clip(f, 0, 255)).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise DataError(f"{where}: integer images range {a.min()}..{a.max()}; expected 0..255 (uint8).")
        a = a.astype(np.uint8)
    else:
        raise DataError(f"{where}: images have dtype {a.dtype}; expected uint8 (or float in 0..1).")
    if a.ndim == 4 and a.shape[-1] == 4:  # RGBA arrays: composite on white, like RGBA files
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = np.rint(a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(a)


def labels_1d(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{where}: labels have shape {y.shape}; expected one label per image (N,) or (N, 1). "
            "Multi-label data is not supported."
        )
    if len(y) != n:
        raise DataError(f"{where}: {n} images but {len(y)} labels.")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{where}: labels are non-integer floats; expected class indices or names.")
        y = y.astype(np.int64)
    return y


def load_npz(path: Path, **kw: Any) -> ImageDataset:
    where = str(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path} is not a readable .npz file ({type(exc).__name__}: {exc}).") from None
    try:
        keys = set(npz.files)

        def get(key: str) -> np.ndarray:
            try:
                return npz[key]
            except ValueError as exc:  # object arrays need pickle
                raise UnsafeFileError(
                    f"{path}: array {key!r} holds Python objects, which only unpickling could read; "
                    "refused. Save plain numeric arrays (np.savez(images=uint8, labels=int))."
                ) from exc

        if {"images", "labels"} <= keys:
            parts = [("images", "labels", None)]
            origin = "npz"
        elif any(f"{s}_images" in keys for s in ("train", "val", "test")):
            parts = [
                (f"{s}_images", f"{s}_labels", s) for s in ("train", "val", "test") if f"{s}_images" in keys
            ]
            origin = "npz"
            for img_key, lab_key, _ in parts:
                if lab_key not in keys:
                    raise DataError(f"{path} has {img_key!r} but no {lab_key!r}.")
        else:
            raise DataError(
                f"{path} has keys {sorted(keys)}; expected 'images' and 'labels', or MedMNIST-style "
                "'train_images'/'train_labels' (+ 'val_*', 'test_*')."
            )
        imgs, labs, splits = [], [], []
        for img_key, lab_key, split in parts:
            x = to_uint8_images(get(img_key), f"{where}[{img_key}]")
            y = labels_1d(get(lab_key), len(x), f"{where}[{lab_key}]")
            imgs.append(x)
            labs.append(y)
            splits += [split] * len(x)
        class_names = None
        for ck in ("classes", "class_names", "label_names"):
            if ck in keys:
                class_names = [str(c) for c in get(ck).tolist()]
                break
    finally:
        npz.close()
    shapes = {x.shape[1:] for x in imgs}
    if len(shapes) > 1:
        raise DataError(f"{path}: the splits' images differ in shape {sorted(shapes)}.")
    images = np.concatenate(imgs)
    labels = np.concatenate(labs)
    if class_names is not None:
        if not np.issubdtype(labels.dtype, np.integer) or (
            labels.size and (labels.min() < 0 or labels.max() >= len(class_names))
        ):
            raise DataError(
                f"{path}: labels must be integers in 0..{len(class_names) - 1} to match its class names."
            )
    given = None if all(s is None for s in splits) else splits
    return finish_arrays(
        name=path.stem,
        root=str(path),
        images=images,
        labels=labels,
        class_names=class_names,
        sources=[f"{path}#{i}" for i in range(len(images))],
        given_splits=given,
        split_origin=origin,
        where=where,
        notes=[],
        **kw,
    )
