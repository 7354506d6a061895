"""``ImageDataset``: labels, splits and sources of an image classification dataset.

A dataset is backed either by image files (``sources`` are their paths, with the sha256 of
each file's bytes taken at load time) or by an in-memory uint8 array (npz, CIFAR, digits).
Subsets share the underlying array / path list and are cheap.

Decode-time failures. The loader fully decodes every file once at load time, so a file
that fails later has changed or vanished on disk since. :meth:`ImageDataset.decode` checks
each file's bytes against its load-time hash; when any changed or fails to decode it raises a
``DataError`` naming the file and writes no cache. It never drops rows in place: callers hold
index arrays (split roles, stored features) that must keep meaning the same images.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from ..io import atomic_path, sha256_json
from .images import (
    DEFAULT_MAX_PIXELS,
    UnreadableImage,
    bomb_warnings_as_errors,
    decode_image_bytes,
    normalize_size,
    resample_for,
    resize_to_chw,
)

SPLIT_NAMES = ("train", "val", "test")
# Bump when decoding changes what pixels come out, so old caches are not reused.
DECODE_VERSION = 1

ProgressCallback = Callable[[int, int], None]


def _preallocate(path: str | os.PathLike[str]) -> None:
    """Reserve the disk blocks of a (sparse) file about to be written through a memory map.

    On a full disk, writes through the map kill the process with SIGBUS (no message, temporary
    file left behind); reserving first turns that into an ENOSPC ``OSError`` that ``atomic_path``
    reports as a ``StoreError``. File systems without fallocate support are left as they were.
    """
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "rb+") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def item_hash_array(arr: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(repr((arr.shape, str(arr.dtype))).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def compute_fingerprint(
    hashes: Sequence[str], labels: np.ndarray, classes: Sequence[str], splits: np.ndarray
) -> str:
    h = hashlib.sha256()
    h.update(b"transferkit-dataset-v1\0")
    h.update(json.dumps(list(classes), ensure_ascii=True).encode())
    h.update(b"\0")
    for x in hashes:
        h.update(bytes.fromhex(x))
    h.update(np.asarray(labels, dtype="<i8").tobytes())
    h.update("\0".join(str(s) for s in splits).encode())
    return h.hexdigest()


class _Progress:
    """``progress`` is True (rich bar on an interactive stderr), False, or a callback(done, total)."""

    def __init__(self, progress: bool | ProgressCallback, total: int, description: str):
        self.cb: ProgressCallback | None = progress if callable(progress) else None
        self.total = total
        self.done = 0
        self._bar: Any = None
        if progress is True and total >= 200 and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task(description, total=total)
            self._bar.start()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.cb is not None:
            self.cb(self.done, self.total)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class ImageDataset:
    """See docs/ARCHITECTURE.md. Build one with :func:`transferkit.data.load_dataset`."""

    def __init__(
        self,
        *,
        name: str,
        root: str,
        classes: list[str],
        labels: np.ndarray,
        splits: np.ndarray,
        sources: list[str],
        hashes: list[str],
        split_origin: str,
        skipped: list[tuple[str, str]] | None = None,
        notes: list[str] | None = None,
        array: np.ndarray | None = None,
        index: np.ndarray | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.name = name
        self.root = root
        self.classes = list(classes)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.splits = np.asarray(splits, dtype="<U5")
        self.sources = list(sources)
        self.skipped: list[tuple[str, str]] = list(skipped or [])
        self.notes: list[str] = list(notes or [])
        self.split_origin = split_origin
        self._hashes = list(hashes)
        self._array = array
        self._index = (
            None
            if array is None
            else np.asarray(np.arange(len(array)) if index is None else index, dtype=np.int64)
        )
        self._max_pixels = max_pixels
        n = len(self.labels)
        if not (len(self.splits) == len(self.sources) == len(self._hashes) == n):
            raise DataError("internal: labels, splits, sources and hashes differ in length")
        if self._index is not None and len(self._index) != n:
            raise DataError("internal: array index and labels differ in length")
        self.fingerprint = compute_fingerprint(self._hashes, self.labels, self.classes, self.splits)

    # ------------------------------------------------------------------ basics
    @property
    def is_array(self) -> bool:
        return self._array is not None

    @property
    def content_hashes(self) -> list[str]:
        """sha256 of each item's bytes (file content, or pixel array), aligned with ``sources``."""
        return list(self._hashes)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        splits = {s: int((self.splits == s).sum()) for s in SPLIT_NAMES if (self.splits == s).any()}
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, classes={len(self.classes)}, "
            f"splits={splits}, split_origin={self.split_origin!r}, skipped={len(self.skipped)})"
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageDataset:
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise DataError(f"boolean mask of shape {idx.shape} does not match {len(self)} items.")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise DataError(f"subset indices out of range for a dataset of {len(self)} items.")
        return ImageDataset(
            name=self.name,
            root=self.root,
            classes=self.classes,
            labels=self.labels[idx],
            splits=self.splits[idx],
            sources=[self.sources[i] for i in idx],
            hashes=[self._hashes[i] for i in idx],
            split_origin=self.split_origin,
            skipped=self.skipped,
            notes=self.notes,
            array=self._array,
            index=None if self._index is None else self._index[idx],
            max_pixels=self._max_pixels,
        )

    def has_split(self, name: str) -> bool:
        return bool((self.splits == name).any())

    def split(self, name: str) -> ImageDataset:
        if name not in SPLIT_NAMES:
            raise DataError(f"split {name!r} is not one of {list(SPLIT_NAMES)}.")
        if not self.has_split(name):
            present = [s for s in SPLIT_NAMES if self.has_split(s)]
            raise DataError(
                f"Dataset {self.name!r} has no {name!r} split (it has {present}, split_origin="
                f"{self.split_origin!r}). Load it with test_fraction/val_fraction to make one, or add "
                f"a {name}/ folder."
            )
        return self.subset(np.flatnonzero(self.splits == name))

    def class_counts(self) -> dict[str, int]:
        counts = (
            np.bincount(self.labels, minlength=len(self.classes))
            if len(self)
            else np.zeros(len(self.classes), dtype=np.int64)
        )
        return {c: int(counts[i]) for i, c in enumerate(self.classes)}

    # ------------------------------------------------------------------ pixels
    def _read_bytes_checked(self, i: int) -> bytes:
        path = self.sources[i]
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UnreadableImage(f"cannot read at decode time ({exc.strerror or exc})") from None
        if hashlib.sha256(data).hexdigest() != self._hashes[i]:
            raise UnreadableImage("file changed on disk since the dataset was loaded")
        return data

    def read_rgb(self, i: int) -> Image.Image:
        """Item ``i`` as a full-size RGB Pillow image (modes converted, EXIF orientation applied)."""
        i = int(i)
        if self._array is not None:
            arr = self._array[self._index[i]]
            return Image.fromarray(np.ascontiguousarray(arr), "L" if arr.ndim == 2 else "RGB").convert("RGB")
        try:
            with bomb_warnings_as_errors():
                return decode_image_bytes(self._read_bytes_checked(i), self._max_pixels)
        except UnreadableImage as exc:
            raise DataError(f"{self.sources[i]}: {exc}. Load the dataset again.") from None

    def _decode_one(self, i: int, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
        if self._array is not None:
            arr = np.ascontiguousarray(self._array[self._index[i]])
            h, w = size
            if arr.ndim == 2:
                if arr.shape != (h, w):
                    arr = np.asarray(Image.fromarray(arr, "L").resize((w, h), resample=resample))
                return np.broadcast_to(arr, (3, h, w))
            if arr.shape[:2] != (h, w):
                arr = np.asarray(Image.fromarray(arr, "RGB").resize((w, h), resample=resample))
            return arr.transpose(2, 0, 1)
        im = decode_image_bytes(self._read_bytes_checked(i), self._max_pixels)
        return resize_to_chw(im, size, resample, contiguous=False)

    def _decode_into(
        self,
        out: np.ndarray,
        size: tuple[int, int],
        resample: Image.Resampling,
        progress: bool | ProgressCallback,
        num_workers: int | None,
    ) -> list[tuple[int, str]]:
        n = len(self)
        failures: list[tuple[int, str]] = []
        bar = _Progress(progress, n, f"decoding {self.name}")
        chunk = 64

        def work(start: int) -> list[tuple[int, str]]:
            bad = []
            for i in range(start, min(n, start + chunk)):
                try:
                    out[i] = self._decode_one(i, size, resample)
                except UnreadableImage as exc:
                    bad.append((i, str(exc)))
                except Exception as exc:  # defensive: never die halfway through a dataset
                    bad.append((i, f"{type(exc).__name__}: {exc}"))
            return bad

        workers = num_workers or default_workers()
        try:
            with bomb_warnings_as_errors():
                if workers <= 1 or n <= chunk:
                    for start in range(0, n, chunk):
                        failures += work(start)
                        bar.advance(min(chunk, n - start))
                else:
                    with ThreadPoolExecutor(max_workers=workers) as pool:
                        for start, bad in zip(
                            range(0, n, chunk), pool.map(work, range(0, n, chunk)), strict=True
                        ):
                            failures += bad
                            bar.advance(min(chunk, n - start))
        finally:
            bar.close()
        return failures

    def _refuse_changed(self, failures: list[tuple[int, str]]) -> None:
        # Dropping rows here would silently shift every index array a caller holds (train /
        # val / scored roles, stored features), so a file that changed after loading stops the
        # decode instead; nothing is cached and loading again picks up the current files.
        i, reason = failures[0]
        raise DataError(
            f"{len(failures)} image(s) of {self.name!r} changed or became unreadable after the dataset "
            f"was loaded, e.g. {self.sources[i]}: {reason}. Nothing was cached; load the dataset again "
            "(run the same command again)."
        )

    def cache_path(
        self, cache_dir: str | os.PathLike[str], size: Any, interpolation: str = "bilinear"
    ) -> Path:
        h, w = normalize_size(size)
        key = sha256_json(
            {"fp": self.fingerprint, "size": [h, w], "interp": interpolation.lower(), "v": DECODE_VERSION}
        )
        return Path(cache_dir) / f"decoded-{h}x{w}-{interpolation.lower()}-{key[:24]}.npy"

    def decode(
        self,
        size: int | tuple[int, int],
        interpolation: str = "bilinear",
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        progress: bool | ProgressCallback = True,
        num_workers: int | None = None,
    ) -> np.ndarray:
        """uint8 (N, 3, H, W): every image resized whole (no crop) to ``size`` = (H, W).

        With ``cache_dir`` the array is written there atomically (keyed by fingerprint, size,
        interpolation) and returned memory-mapped read-only; a later call with the same key
        just maps the file. See the module docstring for what happens to images that fail.
        """
        hw = normalize_size(size)
        resample = resample_for(interpolation)
        n = len(self)
        if cache_dir is None:
            out = np.empty((n, 3, *hw), dtype=np.uint8)
            failures = self._decode_into(out, hw, resample, progress, num_workers)
            if failures:
                self._refuse_changed(failures)
            return out
        dest = self.cache_path(cache_dir, hw, interpolation)
        if dest.is_file():
            try:
                cached = np.load(dest, mmap_mode="r", allow_pickle=False)
                if cached.shape == (n, 3, *hw) and cached.dtype == np.uint8:
                    return cached
            except (OSError, ValueError):
                pass  # unreadable cache entry: rebuild it below
        with atomic_path(dest, suffix=".npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, *hw))
            _preallocate(tmp)
            failures = self._decode_into(out, hw, resample, progress, num_workers)
            out.flush()
            del out
            if failures:
                self._refuse_changed(failures)
        return np.load(dest, mmap_mode="r", allow_pickle=False)

