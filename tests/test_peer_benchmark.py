"""benchmarks/peer_fastai.py without fastai: the images each side trains and is scored on.

The benchmark's claim is "the same training images and the same held-out images" for fastai and
for ``transferkit fit``. fastai gets the benchmark's file lists; transferkit re-reads the data
folder itself. These tests check that the folder transferkit reads (the original, or the quick
run's copied subsample) makes ``transferkit fit`` train and score on exactly the lists fastai gets.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder

from transferkit.data import load_dataset

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "peer_fastai.py"


@pytest.fixture(scope="module")
def peer():
    spec = importlib.util.spec_from_file_location("peer_fastai", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def content(ds, idx) -> Counter:
    """What a set of images is, independent of paths: (bytes hash, class name) with multiplicity."""
    hashes = ds.content_hashes
    return Counter((hashes[i], ds.classes[ds.labels[i]]) for i in idx)


@pytest.fixture()
def unsplit_folder(tmp_path) -> Path:
    """Class folders without split folders, with one exact duplicate (it must not straddle the split)."""
    root = make_image_folder(tmp_path / "colours", per_class=15, seed=3)
    shutil.copyfile(root / "red" / "red_000.png", root / "red" / "red_dup.png")
    return root


def test_split_is_what_fit_scores_and_everything_else_trains(peer, unsplit_folder):
    ds = load_dataset(unsplit_folder, progress=False)
    train, scored = peer.benchmark_split(ds, seed=0)
    assert len(np.intersect1d(train, scored)) == 0
    assert len(train) + len(scored) == len(ds)
    assert set(ds.splits[scored]) == {"test"}  # no split folders: load_dataset's held-out test split
    dup = {h for h, n in Counter(ds.content_hashes).items() if n > 1}
    sides = {"scored" if i in set(scored) else "train" for i in range(len(ds)) if ds.content_hashes[i] in dup}
    assert len(sides) == 1  # the duplicate pair is on one side


@pytest.mark.parametrize("layout", ["unsplit", "train_val"])
def test_quick_copy_makes_fit_use_exactly_the_picked_images(peer, unsplit_folder, tmp_path, monkeypatch, layout):
    if layout == "train_val":
        data = make_image_folder(tmp_path / "tv", per_class=12, splits=("train",), seed=1)
        make_image_folder(data, per_class=9, splits=("val",), seed=2)
    else:
        data = unsplit_folder
    monkeypatch.setattr(peer, "QUICK_TRAIN_PER_CLASS", 5)
    monkeypatch.setattr(peer, "QUICK_SCORED_PER_CLASS", 3)
    ds = load_dataset(data, progress=False)
    train, scored = peer.quick_pick(ds, *peer.benchmark_split(ds, seed=0), seed=0)
    assert Counter(ds.labels[train]) == {0: 5, 1: 5, 2: 5} and Counter(ds.labels[scored]) == {0: 3, 1: 3, 2: 3}

    copy = load_dataset(peer.materialize(ds, train, scored, tmp_path / "copy"), progress=False)
    copy_train, copy_scored = peer.benchmark_split(copy, seed=0)
    assert content(copy, copy_scored) == content(ds, scored)
    assert content(copy, copy_train) == content(ds, train)
    assert copy.classes == ds.classes
