"""Deterministic stratified train/val/test split that never separates exact duplicates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError


def check_fractions(test_fraction: float, val_fraction: float) -> None:
    for name, f in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not (0.0 <= float(f) < 1.0):
            raise ConfigError(f"{name}={f!r} must be in [0, 1), e.g. 0.3.")
    if test_fraction + val_fraction >= 1.0:
        raise ConfigError(
            f"test_fraction + val_fraction = {test_fraction + val_fraction:g} leaves nothing to train on; "
            "keep their sum below 1 (e.g. test_fraction=0.3, val_fraction=0.1)."
        )


def duplicate_groups(hashes: Sequence[str]) -> list[list[int]]:
    """Indices grouped by identical content hash, groups ordered by first occurrence."""
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        groups.setdefault(h, []).append(i)
    return list(groups.values())


def stratified_dedup_split(
    labels: np.ndarray,
    hashes: Sequence[str],
    classes: Sequence[str],
    *,
    seed: int,
    test_fraction: float,
    val_fraction: float = 0.0,
    sources: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Assign every item to "train" / "val" / "test"; returns (splits, notes).

    Items with the same content hash form one group and land in the same split (a group's
    class is that of its first member; groups whose members disagree on the label are
    reported in the notes). Per class, the groups are shuffled with ``seed`` and
    ``round(n_groups * fraction)`` go to test (then val), always leaving at least one group
    in train. A class with a single distinct image therefore goes entirely to train.
    """
    check_fractions(test_fraction, val_fraction)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    splits = np.full(n, "train", dtype="<U5")
    notes: list[str] = []
    groups = duplicate_groups(hashes)
    by_class: dict[int, list[list[int]]] = {}
    n_dup_items = 0
    for g in groups:
        if len(g) > 1:
            n_dup_items += len(g) - 1
            glabels = {int(labels[i]) for i in g}
            if len(glabels) > 1:
                who = ", ".join(
                    f"{sources[i] if sources is not None else f'#{i}'} ({classes[int(labels[i])]})" for i in g
                )
                notes.append(f"identical images carry different labels: {who}; kept together in one split")
        by_class.setdefault(int(labels[g[0]]), []).append(g)
    if n_dup_items:
        notes.append(
            f"{n_dup_items} exact duplicate image(s) found ({sum(len(g) > 1 for g in groups)} group(s)); "
            "each group is kept in a single split"
        )
    rng = np.random.default_rng(seed)
    for c in range(len(classes)):
        cgroups = by_class.get(c, [])
        k = len(cgroups)
        if k == 0:
            continue
        order = rng.permutation(k)
        n_test = min(int(round(k * test_fraction)), k - 1)
        n_val = min(int(round(k * val_fraction)), k - 1 - n_test)
        if k == 1 and (test_fraction > 0 or val_fraction > 0):
            notes.append(f"class {classes[c]!r} has a single distinct image; it goes to train only")
        for rank, gi in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            for i in cgroups[gi]:
                splits[i] = split
    return splits, notes
