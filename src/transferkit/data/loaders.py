"""``load_dataset``: every supported dataset layout -> :class:`ImageDataset`.

Layouts, one module each: an ImageFolder tree or a tree of ``train/ val/ [test/]`` split
folders (``folder``), a CSV manifest ``path,label[,split]`` (``manifest``), an ``.npz``
(``npz``), a CIFAR-10/100 python-batches folder (``cifar``), or the built-in name ``digits``
(``digits``). What they share: finding and checking files (``files``) and turning the found
items into a dataset with its splits (``assemble``).

Every image file is read once: its bytes are hashed (sha256; used for the fingerprint and
for duplicate detection) and fully decoded (JPEG at reduced DCT scale) to prove it is
readable. Unreadable files end up in ``dataset.skipped`` as ``(path, reason)``; hidden files
(``.DS_Store``, ``._x.jpg``), ``__MACOSX`` folders and files without an image extension are
ignored silently (a count goes into ``dataset.notes``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError, DataError
from .cifar import find_cifar_dir, load_cifar_dataset
from .dataset import SPLIT_NAMES, ImageDataset, ProgressCallback
from .digits import load_digits_dataset
from .files import list_image_files
from .folder import load_folder
from .images import DEFAULT_MAX_PIXELS
from .manifest import UnsafeDataPathError, load_csv
from .npz import load_npz
from .split import check_fractions

__all__ = ["BUILTIN_NAMES", "UnsafeDataPathError", "list_image_files", "load_dataset"]

BUILTIN_NAMES = ("digits",)


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
            ds = load_cifar_dataset(found[0], found[1], declared=classes, **common)
        else:
            ds = load_folder(path, declared=classes, **files_kw)
    elif path.is_file() and path.suffix.lower() == ".csv":
        ds = load_csv(path, declared=classes, **files_kw)
    elif path.is_file() and path.suffix.lower() == ".npz":
        ds = load_npz(path, declared=classes, **common)
    elif not path.exists() and text.lower() in BUILTIN_NAMES:
        ds = load_digits_dataset(declared=classes, **common)
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
