"""transferkit.data.roles: who trains, who selects, who is scored, and exact duplicates."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.data import load_dataset
from transferkit.data.roles import (
    Roles,
    duplicate_report,
    per_class_roles,
    split_roles,
    stratified_carve,
    stratified_holdout,
    train_indices,
    train_mask,
)
from transferkit.errors import DataError


def png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def folder_with_duplicates(root: Path, distinct: int = 12, groups: int = 6, copies: int = 3) -> Path:
    """Two classes of ``distinct`` images each; in each class ``groups`` of them have ``copies``
    byte-identical copies under other names (no split folders: load_dataset splits)."""
    seed = 0
    for cls in ("cat", "dog"):
        for i in range(distinct):
            first = png(root / cls / f"{i:03d}.png", seed)
            seed += 1
            if i < groups:
                for k in range(1, copies):
                    shutil.copyfile(first, root / cls / f"{i:03d}_copy{k}.png")
    return root


def roles_played(ds, roles: Roles) -> dict[str, set[str]]:
    where: dict[str, set[str]] = {}
    for h, r in zip(ds.content_hashes, roles.role_of(len(ds)), strict=True):
        where.setdefault(h, set()).add(str(r))
    return where


def old_stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The selection carve as api.py made it before duplicates were grouped (the reference)."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 3 or fraction <= 0:
            continue
        picked.append(rng.permutation(members)[: max(1, int(round(fraction * len(members))))])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


# ------------------------------------------------------------------------------ duplicates
@pytest.mark.parametrize("test_fraction", [0.3, 0.0])
def test_exact_duplicates_never_play_two_roles(tmp_path, test_fraction):
    root = folder_with_duplicates(tmp_path)
    for seed in range(6):
        ds = load_dataset(root, seed=seed, test_fraction=test_fraction, progress=False)
        for val_fraction in (0.15, 0.5):
            roles = split_roles(ds, val_fraction, seed)
            assert len(roles.val) > 0  # the selection carve ran
            assert all(len(r) == 1 for r in roles_played(ds, roles).values())
            report = duplicate_report(ds, roles)
            assert report["groups"] == 12 and report["pairs"] == 12 * 3 and report["images"] == 36
            assert report["straddling"] == 0 and report["examples"] == []
            assert sum(report["by_roles"].values()) == 12
            assert set(report["by_roles"]) <= {"train", "selection", "scored"}
            # Cut to a few images per class for a data-size curve: still no group in two roles.
            small = per_class_roles(roles, ds.labels, 5, seed)
            assert duplicate_report(ds, small)["straddling"] == 0


def test_the_old_carve_did_split_duplicates(tmp_path):
    """Why the carve groups: without it, some seed puts a copy in train and another in selection."""
    ds = load_dataset(folder_with_duplicates(tmp_path), test_fraction=0.0, progress=False)
    train = train_indices(ds)
    straddled = 0
    for seed in range(6):
        val = train[old_stratified_holdout(ds.labels[train], 0.5, seed)]
        roles = Roles(np.setdiff1d(train, val), val, np.zeros(0, np.int64), "all", "old")
        straddled += duplicate_report(ds, roles)["straddling"]
    assert straddled > 0


def test_duplicates_across_given_split_folders_are_reported(tmp_path):
    png(tmp_path / "train" / "cat" / "a.png", 1)
    png(tmp_path / "train" / "dog" / "b.png", 2)
    png(tmp_path / "train" / "dog" / "c.png", 3)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    shutil.copyfile(tmp_path / "train" / "cat" / "a.png", tmp_path / "val" / "cat" / "a_again.png")
    ds = load_dataset(tmp_path, progress=False)
    report = duplicate_report(ds, split_roles(ds, 0.15, 0))
    assert report["groups"] == 1 and report["pairs"] == 1 and report["straddling"] == 1
    assert report["by_roles"] == {"train+scored": 1}
    assert sorted(report["examples"][0]["roles"]) == ["scored", "train"]
    assert any(s.endswith("a_again.png") for s in report["examples"][0]["sources"])


# --------------------------------------------------------------- same picks as before
def test_carve_without_duplicates_matches_the_old_picks():
    rng = np.random.default_rng(0)
    for _ in range(200):
        labels = rng.integers(0, int(rng.integers(1, 6)), int(rng.integers(1, 60)))
        fraction, seed = float(rng.choice([0.0, 0.1, 0.15, 0.5])), int(rng.integers(0, 1000))
        assert np.array_equal(stratified_holdout(labels, fraction, seed),
                              old_stratified_holdout(labels, fraction, seed))


def test_carve_moves_whole_groups():
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    groups = np.array([0, 0, 0, 1, 2, 3, 4, 4, 5, 6])  # one triple, one pair
    for seed in range(20):
        rest, carved = stratified_carve(labels, 0.5, seed, group_ids=groups)
        assert np.array_equal(np.sort(np.concatenate([rest, carved])), np.arange(10))
        for g in np.unique(groups):
            members = np.flatnonzero(groups == g)
            assert np.isin(members, carved).all() or not np.isin(members, carved).any()
        # round(0.5 * 6) = 3 of class 0 and 2 of class 1, plus at most a group's extra copies
        assert 3 <= (labels[carved] == 0).sum() <= 5 and 2 <= (labels[carved] == 1).sum() <= 3


def test_carve_leave_one_keeps_a_group_in_each_class():
    labels = np.array([0, 0, 0, 1, 1])
    groups = np.array([0, 0, 1, 2, 2])  # class 1 is one duplicate pair
    for seed in range(20):
        rest, carved = stratified_carve(labels, 0.25, seed, group_ids=groups, at_least_one=True, leave_one=True)
        assert set(labels[rest].tolist()) == {0, 1}
        # Class 0 gives one image, or its pair whole; class 1's only group stays.
        assert carved.tolist() in ([2], [0, 1])


# ---------------------------------------------------------------------- the train role
def test_train_indices_need_a_train_split(tmp_path):
    root = folder_with_duplicates(tmp_path, groups=0)
    only_test = load_dataset(root, split="test", progress=False)
    with pytest.raises(DataError, match=r"has no training images \(splits present: \['test'\]\)"):
        train_indices(only_test)
    with pytest.raises(DataError, match="no training images"):
        split_roles(only_test, 0.15, 0)
    full = load_dataset(root, progress=False)
    assert np.array_equal(train_indices(full), np.flatnonzero(full.splits == "train"))
    roles = split_roles(full, 0.15, 0)
    assert np.array_equal(train_indices(full, roles), roles.train)
    assert train_mask(full, roles).sum() == len(roles.train) < (full.splits == "train").sum()


def test_describe_is_the_run_directory_format(tmp_path):
    ds = load_dataset(folder_with_duplicates(tmp_path, groups=0), progress=False)
    roles = split_roles(ds, 0.15, 0)
    d = roles.describe(ds)
    assert list(d) == ["train", "val", "scored", "origin", "text"]
    assert d["train"] == {"n": len(roles.train), "from": "train"}
    assert d["val"] == {"n": len(roles.val), "from": "stratified 15% of train, seed 0"}
    assert d["scored"] == {"name": "test", "n": len(roles.scored)}
    assert d["origin"] == ds.split_origin == "stratified-dedup seed=0 test=0.3"
    assert d["text"] == (f"trained on {len(roles.train)} 'train' images, {len(roles.val)} more for model "
                         f"selection (stratified 15% of train, seed 0); scored on {len(roles.scored)} held-out "
                         f"'test' images ({ds.split_origin})")


def test_api_keeps_the_old_names():
    from transferkit import api

    assert api.SplitRoles is Roles and api.split_roles is split_roles
    assert api.stratified_holdout is stratified_holdout
    assert api.scored_split_name.__module__ == "transferkit.data.roles"


# ------------------------------------------------------------------------- real data
@pytest.mark.shared
@pytest.mark.parametrize("name", ["flowers5", "trashnet"])
def test_real_duplicates_stay_in_one_role(shared_dir, name):
    path = shared_dir / "data" / name
    if not path.is_dir():
        pytest.skip(f"{path} is not there")
    ds = load_dataset(path, progress=False)
    report = duplicate_report(ds, split_roles(ds, 0.15, 0))
    assert report["groups"] > 0 and report["straddling"] == 0, report
