"""Folder trees: one sub-folder per class, or ``train/ val/ [test/]`` split folders with class
sub-folders inside (aliases such as ``valid/``, ``testing/`` accepted)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError
from .assemble import SPLIT_ALIASES, finish_files
from .dataset import SPLIT_NAMES, ImageDataset
from .files import FolderWalker


def load_folder(root: Path, *, declared: Sequence[str] | None, **kw: Any) -> ImageDataset:
    walker = FolderWalker()
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
    return finish_files(
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
