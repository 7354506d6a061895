"""CSV manifests: rows ``path,label[,split]`` (header optional), paths relative to the CSV's
folder. A row whose path resolves outside that folder (``..``, absolute, symlink) is refused."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError, UnsafeFileError
from .assemble import SPLIT_ALIASES, finish_files
from .dataset import ImageDataset


class UnsafeDataPathError(UnsafeFileError, DataError):
    """A manifest row points outside the manifest's folder (catchable as either parent)."""


_HEADER_PATH = {"path", "file", "filename", "file_name", "filepath", "image", "image_path", "img"}
_HEADER_LABEL = {"label", "class", "classname", "class_name", "target", "y", "category"}


def load_csv(path: Path, *, declared: Sequence[str] | None, **kw: Any) -> ImageDataset:
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
    return finish_files(
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
