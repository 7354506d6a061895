"""Which images play which role: the one place that decides train / selection / scored.

- *train*: what a model learns from (and what the advisor measures);
- *selection* (the ``val`` index array): model selection and early stopping. It is the
  dataset's own val split when the dataset also has a test split; otherwise a stratified
  ``val_fraction`` of train, carved by :func:`stratified_carve`;
- *scored*: the held-out split every reported accuracy comes from (test if present, else
  val, else none). It is never used to choose anything.

Exact duplicates (identical bytes, or identical pixels for arrays) form one group and a group
never straddles two roles that transferkit decides: ``load_dataset`` keeps each group in one
split (``split.py``) and the selection carve moves whole groups. Splits the user gave
(folders, a manifest column, npz keys) are kept as given; :func:`duplicate_report` says
whether any group straddles them.

Every other "which images" choice (data-size subsets, the advisor's learning-curve hold-out,
``pretrain``'s selection share, subsamples that bound a cost) goes through the helpers here, so
the seeds and draw orders that the published figures depend on live in one file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from .split import duplicate_groups

ROLE_NAMES = ("train", "selection", "scored")


@dataclass(eq=False)
class Roles:
    """Index arrays (into the dataset) for the train / val (selection) / scored roles."""

    train: np.ndarray
    val: np.ndarray
    scored: np.ndarray
    scored_name: str  # "test", "val" or "all" (nothing held out)
    val_origin: str  # where the selection images come from, in words

    def describe(self, dataset: Any) -> dict[str, Any]:
        """The ``split`` entry of a run directory's config.json (its format is fixed)."""
        origin = getattr(dataset, "split_origin", "unknown")
        return {
            "train": {"n": int(len(self.train)), "from": "train"},
            "val": {"n": int(len(self.val)), "from": self.val_origin},
            "scored": {"name": self.scored_name, "n": int(len(self.scored))},
            "origin": origin,
            "text": (f"trained on {len(self.train)} 'train' images, {len(self.val)} more for model selection "
                     f"({self.val_origin}); scored on {len(self.scored)} held-out '{self.scored_name}' images "
                     f"({origin})"),
        }

    def role_of(self, n: int) -> np.ndarray:
        """Role name of each of ``n`` dataset items: train, selection, scored or unused."""
        out = np.full(n, "unused", dtype="<U9")
        out[self.train], out[self.val], out[self.scored] = "train", "selection", "scored"
        return out


# ------------------------------------------------------------------------------ the roles
def scored_split_name(dataset: Any) -> str:
    """The split that is scored: test if present, else val, else "all" (nothing held out)."""
    for name in ("test", "val"):
        if dataset.has_split(name):
            return name
    return "all"


def train_mask(dataset: Any, roles: Roles | None = None) -> np.ndarray:
    """Boolean mask of the images a model learns from: ``roles.train``, or the train split.

    A dataset without training images is a ``DataError`` saying how to get some.
    """
    splits = np.asarray(dataset.splits)
    if roles is not None:
        mask = np.zeros(len(splits), dtype=bool)
        mask[roles.train] = True
    else:
        mask = splits == "train"
    if not mask.any():
        present = sorted(set(splits.tolist()))
        raise DataError(
            f"Dataset {dataset.name!r} ({dataset.root}) has no training images (splits present: {present}). "
            "A tree with split folders needs a 'train/' folder; any other layout is split by "
            "load_dataset(..., test_fraction=...) itself, so load it without split=."
        )
    return mask


def train_indices(dataset: Any, roles: Roles | None = None) -> np.ndarray:
    """Indices of :func:`train_mask` (sorted)."""
    return np.flatnonzero(train_mask(dataset, roles))


def split_roles(dataset: Any, val_fraction: float, seed: int) -> Roles:
    """Decide which images train, which select, and which are scored (see the module docstring)."""
    splits = np.asarray(dataset.splits)
    train = train_indices(dataset)
    scored_name = scored_split_name(dataset)
    scored = np.flatnonzero(splits == scored_name) if scored_name != "all" else np.zeros(0, np.int64)
    if scored_name == "test" and dataset.has_split("val"):
        return Roles(train, np.flatnonzero(splits == "val"), scored, "test", "val")
    val = stratified_holdout(dataset.labels[train], val_fraction, seed, group_ids=duplicate_ids(dataset)[train])
    return Roles(np.setdiff1d(train, train[val]), train[val], scored, scored_name,
                 f"stratified {val_fraction:.0%} of train, seed {seed}")


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int,
                       group_ids: np.ndarray | None = None) -> np.ndarray:
    """Positions (into ``labels``) of the selection share: per class ``max(1, round(fraction * n))``
    of its ``n`` images, whole duplicate groups at a time; classes with fewer than 3 images give none."""
    _, carved = stratified_carve(labels, fraction, seed, group_ids=group_ids, min_per_class=3, at_least_one=True)
    return carved


# ----------------------------------------------------------------------- duplicate groups
def duplicate_ids(dataset: Any) -> np.ndarray:
    """Group id per item: items with the same content hash share one (ids in first-seen order).

    Objects without ``content_hashes`` (duck-typed datasets) count every item as distinct.
    """
    hashes = getattr(dataset, "content_hashes", None)
    if hashes is None:
        return np.arange(len(dataset.labels), dtype=np.int64)
    ids = np.empty(len(hashes), dtype=np.int64)
    for gid, members in enumerate(duplicate_groups(hashes)):
        ids[members] = gid
    return ids


def duplicate_report(dataset: Any, roles: Roles) -> dict[str, Any]:
    """How many exact-duplicate groups ``dataset`` holds and which roles their members play.

    ``groups``: groups of 2+ identical images; ``images``: images in them; ``pairs``: identical
    pairs (a group of k gives k(k-1)/2); ``by_roles``: number of groups per set of roles their
    members play (e.g. ``{"train": 3, "train+unused": 1}``); ``straddling``: groups whose
    members play more than one of train / selection / scored (the leaks), with ``examples``
    (sources and roles) of up to five of them.
    """
    hashes = getattr(dataset, "content_hashes", None)
    groups = [g for g in duplicate_groups(hashes) if len(g) > 1] if hashes is not None else []
    role = roles.role_of(len(dataset.labels))
    by_roles: dict[str, int] = {}
    examples = []
    straddling = 0
    for members in groups:
        played = [r for r in (*ROLE_NAMES, "unused") if r in set(role[members].tolist())]
        key = "+".join(played)
        by_roles[key] = by_roles.get(key, 0) + 1
        if len([r for r in played if r != "unused"]) > 1:  # an unused copy cannot leak
            straddling += 1
            if len(examples) < 5:
                examples.append({"sources": [dataset.sources[i] for i in members],
                                 "roles": [str(role[i]) for i in members]})
    return {
        "groups": len(groups),
        "images": int(sum(len(g) for g in groups)),
        "pairs": int(sum(len(g) * (len(g) - 1) // 2 for g in groups)),
        "by_roles": by_roles,
        "straddling": straddling,
        "examples": examples,
    }


# -------------------------------------------------------------------- choosing items
def stratified_carve(
    labels: np.ndarray,
    fraction: float,
    rng: np.random.Generator | int,
    *,
    group_ids: np.ndarray | None = None,
    min_per_class: int = 2,
    at_least_one: bool = False,
    leave_one: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(rest, carved) positions into ``labels``, both sorted: a stratified ``fraction`` carved out.

    Per class (ascending label) with ``n >= min_per_class`` items, the items are permuted with
    ``rng`` and ``k = round(fraction * n)`` carved, raised to 1 with ``at_least_one`` and capped
    at ``n - 1`` with ``leave_one``; classes below ``min_per_class`` draw no random numbers.
    Each caller keeps its historical rule through these switches.

    Items sharing a ``group_id`` (exact duplicates) move together: walking the permuted order,
    an item brings its whole group along, until ``k`` items of the class are carved (a group
    may overshoot by its extra copies; with ``leave_one`` a group that would empty the class
    is passed over). The permutation is drawn over items, not groups, so without duplicates
    the picks are exactly those of a plain per-class permutation, and with duplicates only
    the groups themselves move: the seeds behind the published figures keep their meaning.
    """
    labels = np.asarray(labels)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    carved = np.zeros(len(labels), dtype=bool)
    group_of = np.arange(len(labels)) if group_ids is None else np.asarray(group_ids)
    copies = _members_of_repeated(group_of)
    if fraction > 0:
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            n = len(members)
            if n < min_per_class:
                continue
            k = int(round(fraction * n))
            k = max(k, 1) if at_least_one else k
            k = min(k, n - 1) if leave_one else k
            taken = int(carved[members].sum())  # carved along with another class's duplicate
            for pos in rng.permutation(members):
                if taken >= k:
                    break
                if carved[pos]:
                    continue
                group = copies.get(int(group_of[pos]), np.array([pos]))
                in_class = int((labels[group] == c).sum())
                if leave_one and n - taken - in_class < 1:
                    continue
                carved[group] = True
                taken += in_class
    return np.flatnonzero(~carved), np.flatnonzero(carved)


def _members_of_repeated(group_of: np.ndarray) -> dict[int, np.ndarray]:
    """{group id: positions} for the ids that occur more than once (the duplicate groups)."""
    ids, counts = np.unique(group_of, return_counts=True)
    return {int(g): np.flatnonzero(group_of == g) for g in ids[counts > 1]}


def per_class_pick(indices: Sequence[int] | np.ndarray, labels: np.ndarray, n_per_class: int,
                   rng: np.random.Generator | int) -> np.ndarray:
    """At most ``n_per_class`` of ``indices`` per class (ascending label), sorted.

    Each class's members are permuted with ``rng`` in the order they appear in ``indices``
    and the first ``n_per_class`` kept, so for one seed a smaller pick is contained in a larger
    one (data-size curves add data rather than redraw it).
    """
    idx = np.asarray(indices, dtype=np.int64)
    labels = np.asarray(labels)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    keep = [rng.permutation(idx[labels[idx] == c])[: int(n_per_class)] for c in np.unique(labels[idx])]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def per_class_roles(roles: Roles, labels: np.ndarray, n_per_class: int, seed: int) -> Roles:
    """The same roles with train and val cut to at most ``n_per_class`` images per class (in total).

    The scored role is untouched, so every point of a data-size curve is scored on the same
    images; selection images stay selection images, so no duplicate group changes role.
    """
    pool = np.concatenate([roles.train, roles.val])
    kept = per_class_pick(pool, labels, n_per_class, seed)
    val = np.intersect1d(roles.val, kept)
    train = np.setdiff1d(kept, val)
    if len(val) and len(train) < 2 * len(np.unique(labels[pool])):
        train, val = kept, np.zeros(0, np.int64)  # too few images to hold any back
    return Roles(train, val, roles.scored, roles.scored_name, roles.val_origin)


def stratified_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified random subset of about ``n`` items, to bound a cost.

    Each class keeps ``max(1, round(n * share))`` of its items (all of them when ``n`` covers
    the data). Used on one role at a time, so it never moves an image between roles.
    """
    y = np.asarray(labels)
    if n >= y.size:
        return np.arange(y.size)
    rng = np.random.default_rng(seed)
    out = []
    classes, counts = np.unique(y, return_counts=True)
    for c, cnt in zip(classes, counts, strict=True):
        take = max(1, int(round(n * cnt / y.size)))
        members = np.flatnonzero(y == c)
        out.append(rng.choice(members, size=min(take, cnt), replace=False))
    return np.sort(np.concatenate(out))
