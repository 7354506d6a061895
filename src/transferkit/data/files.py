"""Finding image files under a folder and checking that each one is a usable image.

Every file is read once: its bytes are hashed (sha256; used for the fingerprint and for
duplicate detection) and fully decoded (JPEG at reduced DCT scale) to prove it is readable.
Hidden files (``.DS_Store``, ``._x.jpg``), ``__MACOSX`` folders and files without an image
extension are not listed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import DataError
from .dataset import ProgressCallback, _Progress, default_workers
from .images import UnreadableImage, bomb_warnings_as_errors, check_image_bytes, is_image_name

IGNORED_DIRS = frozenset({"__MACOSX", "__pycache__"})
# File names that scrapers save when the real photo is gone ("imageNotFound.gif", ...).
PLACEHOLDER_RE = re.compile(
    r"(image|img|photo|picture)[\W_]*(not[\W_]*found|not[\W_]*available|unavailable|missing|removed)"
    r"|placeholder|no[\W_]*image[\W_]*available",
    re.IGNORECASE,
)


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


class FolderWalker:
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


def list_image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden files and symlink loops skipped), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of images.")
    return [Path(p) for p in FolderWalker().files(str(folder))]
