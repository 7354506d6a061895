"""``load_dataset``: every supported dataset layout -> :class:`ImageDataset`.

Layouts: an ImageFolder tree (one sub-folder per class), a tree of ``train/ val/ [test/]``
split folders (class sub-folders inside each), a CSV manifest (``path,label[,split]``), an
``.npz`` (``images``/``labels`` or MedMNIST ``train_images``/...), a CIFAR-10/100
python-batches folder, or the built-in name ``digits``.

Every image file is read once: its bytes are hashed (sha256; used for the fingerprint and
for duplicate detection) and fully decoded (JPEG at reduced DCT scale) to prove it is
readable. Unreadable files end up in ``dataset.skipped`` as ``(path, reason)``; hidden files
(``.DS_Store``, ``._x.jpg``), ``__MACOSX`` folders and files without an image extension are
ignored silently (a count goes into ``dataset.notes``).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, UnsafeFileError
from .cifar import find_cifar_dir, load_cifar
from .dataset import SPLIT_NAMES, ImageDataset, ProgressCallback, _Progress, default_workers, item_hash_array
from .images import (
    DEFAULT_MAX_PIXELS,
    UnreadableImage,
    bomb_warnings_as_errors,
    check_image_bytes,
    is_image_name,
)
from .split import check_fractions, stratified_dedup_split

BUILTIN_NAMES = ("digits",)
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
IGNORED_DIRS = frozenset({"__MACOSX", "__pycache__"})
# File names that scrapers save when the real photo is gone ("imageNotFound.gif", ...).
PLACEHOLDER_RE = re.compile(
    r"(image|img|photo|picture)[\W_]*(not[\W_]*found|not[\W_]*available|unavailable|missing|removed)"
    r"|placeholder|no[\W_]*image[\W_]*available",
    re.IGNORECASE,
)


class UnsafeDataPathError(UnsafeFileError, DataError):
    """A manifest row points outside the manifest's folder (catchable as either parent)."""


# --------------------------------------------------------------------------- file checking
def _check_one(path: str, max_pixels: int, skip_placeholders: bool) -> tuple[str | None, str | None]:
    """(sha256, None) for a usable image, (None, reason) otherwise. Never raises."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return None, f"cannot read file ({exc.strerror or exc})"
    except Exception as exc:  # pragma: no cover - e.g. ValueError for NUL in a path
        return None, f"cannot read file ({type(exc).__name__}: {exc})"
    try:
        check_image_bytes(data, max_pixels)
    except UnreadableImage as exc:
        return None, str(exc)
    except Exception as exc:  # pragma: no cover - belt and braces: a file must never crash a load
        return None, f"{type(exc).__name__}: {exc}"
    if skip_placeholders and PLACEHOLDER_RE.search(Path(path).stem):
        return None, (
            "looks like a web placeholder saved in place of a missing photo (file name says so); "
            "not used as a training example (skip_placeholders=False keeps it)"
        )
    return hashlib.sha256(data).hexdigest(), None


def check_files(
    paths: Sequence[str],
    *,
    max_pixels: int,
    skip_placeholders: bool,
    progress: bool | ProgressCallback,
    num_workers: int | None,
    description: str,
) -> list[tuple[str | None, str | None]]:
    n = len(paths)
    results: list[tuple[str | None, str | None]] = [(None, None)] * n
    chunk = 32
    bar = _Progress(progress, n, description)

    def work(start: int) -> int:
        for i in range(start, min(n, start + chunk)):
            results[i] = _check_one(paths[i], max_pixels, skip_placeholders)
        return min(chunk, n - start)

    workers = num_workers or default_workers()
    try:
        with bomb_warnings_as_errors():
            if workers <= 1 or n <= chunk:
                for start in range(0, n, chunk):
                    bar.advance(work(start))
            else:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for done in pool.map(work, range(0, n, chunk)):
                        bar.advance(done)
    finally:
        bar.close()
    return results


# --------------------------------------------------------------------------- folder walking
def _fs_key(path: str) -> bytes:
    return os.fsencode(path)


class _Walker:
    """Recursive listing that follows folder symlinks but never visits a folder twice."""

    def __init__(self) -> None:
        self.visited: set[tuple[int, int]] = set()
        self.loops: list[str] = []
        self.ignored: list[str] = []

    def subdirs(self, folder: str) -> list[str]:
        out = []
        for e in self._entries(folder):
            if _hidden(e.name):
                continue
            try:
                if e.is_dir():
                    out.append(e.path)
            except OSError:
                continue
        return sorted(out, key=_fs_key)

    def loose_images(self, folder: str) -> list[str]:
        out = []
        for e in self._entries(folder):
            try:
                if not _hidden(e.name) and not e.is_dir() and is_image_name(e.name):
                    out.append(e.path)
            except OSError:
                continue
        return out

    def _entries(self, folder: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as it:
                return list(it)
        except OSError:
            return []

    def reserve(self, folders: Sequence[str]) -> None:
        """Mark the root, split and class folders as owned: a symlink from inside one class
        folder to the root or to another class folder is not followed (it would relabel images)."""
        for d in folders:
            try:
                st = os.stat(d)
            except OSError:
                continue
            self.visited.add((st.st_dev, st.st_ino))

    def files(self, top: str) -> list[str]:
        """Image files under ``top`` (recursively), sorted by their byte names."""
        found: list[str] = []
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                st = os.stat(d)
            except OSError:
                self.loops.append(d)
                continue
            key = (st.st_dev, st.st_ino)
            if d != top and key in self.visited:
                self.loops.append(d)
                continue
            self.visited.add(key)
            for e in self._entries(d):
                if _hidden(e.name):
                    continue
                try:
                    is_dir = e.is_dir()
                except OSError:  # e.g. ELOOP on a self-referencing symlink
                    is_dir = False
                if is_dir:
                    stack.append(e.path)
                elif is_image_name(e.name):
                    found.append(e.path)
                else:
                    self.ignored.append(e.path)
        return sorted(found, key=_fs_key)


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_DIRS or name in ("Thumbs.db", "desktop.ini")


# --------------------------------------------------------------------------- assembly helpers
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


def _finish_files(
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


def _to_uint8_images(images: np.ndarray, where: str) -> np.ndarray:
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


def _labels_1d(labels: np.ndarray, n: int, where: str) -> np.ndarray:
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


def _finish_arrays(
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


# --------------------------------------------------------------------------- layouts
def _load_npz(path: Path, **kw: Any) -> ImageDataset:
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
            x = _to_uint8_images(get(img_key), f"{where}[{img_key}]")
            y = _labels_1d(get(lab_key), len(x), f"{where}[{lab_key}]")
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
    return _finish_arrays(
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


def _load_digits(**kw: Any) -> ImageDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return _finish_arrays(
        name="digits",
        root="sklearn.datasets.load_digits",
        images=images,
        labels=d.target.astype(np.int64),
        class_names=[str(c) for c in d.target_names.tolist()],
        sources=[f"digits#{i}" for i in range(len(images))],
        given_splits=None,
        split_origin="digits",
        where="digits",
        notes=[],
        **kw,
    )


def _load_cifar(kind: str, folder: Path, **kw: Any) -> ImageDataset:
    c = load_cifar(kind, folder)
    return _finish_arrays(
        name=kind,
        root=str(folder),
        images=c["images"],
        labels=c["labels"],
        class_names=c["classes"],
        sources=c["sources"],
        given_splits=c["splits"],
        split_origin="cifar",
        where=str(folder),
        notes=[],
        **kw,
    )


_HEADER_PATH = {"path", "file", "filename", "file_name", "filepath", "image", "image_path", "img"}
_HEADER_LABEL = {"label", "class", "classname", "class_name", "target", "y", "category"}


def _load_csv(path: Path, *, declared: Sequence[str] | None, **kw: Any) -> ImageDataset:
    base = Path(os.path.realpath(path.parent))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc}); save the manifest as UTF-8.") from None
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    rows = list(csv.reader(text.splitlines()))
    items: list[tuple[str, str, str | None]] = []
    skipped: list[tuple[str, str]] = []
    notes: list[str] = []
    has_split: bool | None = None
    first = True
    seen: set[str] = set()
    for lineno, row in enumerate(rows, start=1):
        fields = [f.strip() for f in row]
        if not fields or all(not f for f in fields) or fields[0].startswith("#"):
            continue
        if first:
            first = False
            if len(fields) >= 2 and fields[0].lower() in _HEADER_PATH and fields[1].lower() in _HEADER_LABEL:
                continue
        if len(fields) not in (2, 3):
            raise DataError(
                f"{path} row {lineno}: expected 'path,label' (or 'path,label,split'); got {len(fields)} "
                f"fields {row!r}."
            )
        rel, label = fields[0], fields[1]
        if not rel or not label:
            raise DataError(f"{path} row {lineno}: empty {'path' if not rel else 'label'} in {row!r}.")
        if declared is not None and label not in {str(c) for c in declared}:
            raise DataError(
                f"{path} row {lineno}: label {label!r} (for {rel!r}) is not one of the declared classes "
                f"{list(declared)}. Fix the row or add the class to classes=."
            )
        split = None
        if len(fields) == 3:
            split = SPLIT_ALIASES.get(fields[2].lower())
            if split is None:
                raise DataError(f"{path} row {lineno}: split {fields[2]!r} is not one of train, val, test.")
        if has_split is None:
            has_split = split is not None
        elif has_split != (split is not None):
            raise DataError(f"{path} row {lineno}: give a split on every row or on none.")
        full = Path(rel) if os.path.isabs(rel) else path.parent / rel
        real = Path(os.path.realpath(full))
        if not real.is_relative_to(base):
            raise UnsafeDataPathError(
                f"{path} row {lineno}: {rel!r} resolves to {real}, outside the manifest's folder {base}; "
                "refused. Keep the images under the CSV's folder (paths relative to it)."
            )
        source = os.path.normpath(full)
        if source in seen:
            notes.append(f"{path} row {lineno}: {rel!r} is listed more than once")
        seen.add(source)
        if not real.is_file():
            skipped.append((source, f"listed in {path.name} row {lineno} but does not exist"))
            continue
        items.append((source, label, split))
    if not items and not skipped:
        raise DataError(
            f"{path} lists no image; expected rows 'path,label' (paths relative to {path.parent})."
        )
    return _finish_files(
        name=path.stem,
        root=str(path),
        items=items,
        declared=declared,
        where=str(path),
        split_origin="csv",
        notes=notes,
        skipped=skipped,
        **kw,
    )


def _load_folder(root: Path, *, declared: Sequence[str] | None, **kw: Any) -> ImageDataset:
    walker = _Walker()
    where = str(root)
    top = walker.subdirs(str(root))
    split_dirs: dict[str, str] = {}
    for d in top:
        canon = SPLIT_ALIASES.get(os.path.basename(d).lower())
        if canon and walker.subdirs(d):
            if canon in split_dirs:
                raise DataError(
                    f"{root} has two folders for the {canon!r} split: {split_dirs[canon]} and {d}."
                )
            split_dirs[canon] = d
    notes: list[str] = []
    items: list[tuple[str, str, str | None]] = []
    class_dirs: dict[str, list[str]] = {}
    if split_dirs:
        others = [d for d in top if d not in split_dirs.values()]
        if others:
            raise DataError(
                f"{root} mixes split folders ({', '.join(sorted(split_dirs))}) with other folders "
                f"({', '.join(os.path.basename(o) for o in others)}). Use either train/ val/ test/ "
                "with class folders inside, or one folder per class, not both."
            )
        origin = "folders"
        walker.reserve([str(root), *split_dirs.values()])
        walker.reserve([c for d in split_dirs.values() for c in walker.subdirs(d)])
        for split in SPLIT_NAMES:
            if split not in split_dirs:
                continue
            sdir = split_dirs[split]
            loose = walker.loose_images(sdir)
            if loose:
                notes.append(
                    f"{len(loose)} image(s) directly in {sdir} are outside any class folder; ignored"
                )
            for cdir in walker.subdirs(sdir):
                cls = os.path.basename(cdir)
                files = walker.files(cdir)
                class_dirs.setdefault(cls, []).append(cdir)
                items += [(f, cls, split) for f in files]
    else:
        origin = None
        if not top:
            loose = walker.loose_images(str(root))
            hint = f" It holds {len(loose)} image(s) directly;" if loose else ""
            raise DataError(
                f"{root} has no class sub-folders.{hint} put each class's images in their own sub-folder "
                "(root/cat/1.jpg, root/dog/2.jpg), or use train/ val/ split folders with class folders "
                "inside."
            )
        loose = walker.loose_images(str(root))
        if loose:
            notes.append(f"{len(loose)} image(s) directly in {root} are outside any class folder; ignored")
        walker.reserve([str(root), *top])
        for cdir in top:
            cls = os.path.basename(cdir)
            files = walker.files(cdir)
            class_dirs.setdefault(cls, []).append(cdir)
            items += [(f, cls, None) for f in files]
    if walker.loops:
        notes.append(
            f"{len(walker.loops)} folder(s) reached twice through symlinks (loop or alias) were not re-read, "
            f"e.g. {walker.loops[0]}"
        )
    if walker.ignored:
        notes.append(
            f"{len(walker.ignored)} file(s) without an image extension ignored, e.g. {walker.ignored[0]}"
        )
    return _finish_files(
        name=root.name,
        root=str(root),
        items=items,
        declared=declared,
        where=where,
        split_origin=origin,
        notes=notes,
        class_dirs=class_dirs,
        **kw,
    )


# --------------------------------------------------------------------------- entry point
def load_dataset(
    spec: str | os.PathLike[str],
    *,
    split: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.3,
    val_fraction: float = 0.0,
    classes: Sequence[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    skip_placeholders: bool = True,
    progress: bool | ProgressCallback = True,
    num_workers: int | None = None,
) -> ImageDataset:
    """Load a dataset from a folder tree, CSV manifest, .npz, CIFAR folder or ``"digits"``.

    When the source defines no split (ImageFolder without split folders, CSV without a split
    column, ``images``/``labels`` npz, digits) a deterministic stratified split is made
    (``seed``, ``test_fraction``, ``val_fraction``) that keeps exact duplicates together.
    ``split`` returns that split only. ``classes`` declares the class list (and its order);
    an image whose label is not in it is an error. ``max_pixels`` refuses images whose header
    declares more pixels (decompression bombs). ``progress``: True (a bar on an interactive
    terminal), False, or a callback ``(done, total)``.
    """
    check_fractions(test_fraction, val_fraction)
    if split is not None and split not in SPLIT_NAMES:
        raise ConfigError(f"split={split!r} must be one of {list(SPLIT_NAMES)} or None.")
    if int(max_pixels) < 1:
        raise ConfigError(f"max_pixels={max_pixels!r} must be a positive number of pixels.")
    if classes is not None and isinstance(classes, str):
        raise ConfigError(f"classes={classes!r} must be a list of class names, not one string.")
    common = dict(seed=seed, test_fraction=test_fraction, val_fraction=val_fraction)
    files_kw = dict(
        common,
        max_pixels=int(max_pixels),
        skip_placeholders=skip_placeholders,
        progress=progress,
        num_workers=num_workers,
    )
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if text.strip() == "":
        raise DataError(
            "DATA is empty; point it at a folder of class sub-folders, a .csv, a .npz or 'digits'."
        )
    if path.is_dir():
        found = find_cifar_dir(path)
        if found is not None:
            ds = _load_cifar(found[0], found[1], declared=classes, **common)
        else:
            ds = _load_folder(path, declared=classes, **files_kw)
    elif path.is_file() and path.suffix.lower() == ".csv":
        ds = _load_csv(path, declared=classes, **files_kw)
    elif path.is_file() and path.suffix.lower() == ".npz":
        ds = _load_npz(path, declared=classes, **common)
    elif not path.exists() and text.lower() in BUILTIN_NAMES:
        ds = _load_digits(declared=classes, **common)
    elif path.exists():
        raise DataError(
            f"DATA {text!r} is a file but neither a .csv manifest nor a .npz. Point it at a folder with one "
            "sub-folder per class, a CSV with 'path,label' rows, an .npz with 'images' and 'labels', "
            "or 'digits'."
        )
    else:
        raise DataError(
            f"DATA {text!r} is neither a folder, a .csv, a .npz nor a built-in name "
            f"({', '.join(BUILTIN_NAMES)}): "
            "it does not exist. Point it at a folder with one sub-folder per class (or train/ val/ split "
            "folders), a CSV manifest, an .npz, a CIFAR python-batches folder, or 'digits'."
        )
    return ds.split(split) if split is not None else ds


def list_image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden files and symlink loops skipped), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of images.")
    return [Path(p) for p in _Walker().files(str(folder))]
