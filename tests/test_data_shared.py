"""transferkit.data on the real datasets in ../shared (run with ``-m shared``)."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pytest

from transferkit.data import load_dataset

pytestmark = pytest.mark.shared


def test_mnist_npz(shared_dir):
    ds = load_dataset(shared_dir / "data" / "mnist_t10k.npz", progress=False)
    assert len(ds) == 10_000 and ds.classes == [str(i) for i in range(10)]
    assert ds.skipped == []
    out = ds.subset(np.arange(16)).decode((28, 28), progress=False)
    assert out.shape == (16, 3, 28, 28)
    assert np.array_equal(out[:, 0], out[:, 1])  # grayscale repeated over channels
    x = np.load(shared_dir / "data" / "mnist_t10k.npz")["images"][:16]
    assert np.array_equal(out[:, 0], x)


def test_digits():
    ds = load_dataset("digits", progress=False)
    assert len(ds) == 1797 and len(ds.classes) == 10


def test_hymenoptera(shared_dir):
    ds = load_dataset(shared_dir / "data" / "hymenoptera", progress=False)
    assert ds.classes == ["ants", "bees"] and ds.split_origin == "folders"
    # 245 train files, one of which is the "image not found" placeholder GIF
    assert len(ds.split("train")) == 244 and len(ds.split("val")) == 153
    assert [p.rsplit("/", 1)[-1] for p, _ in ds.skipped] == ["imageNotFound.gif"]
    assert any(s.endswith("ant photos.jpg") for s in ds.sources)
    kept = load_dataset(shared_dir / "data" / "hymenoptera", progress=False, skip_placeholders=False)
    assert len(kept.split("train")) == 245 and kept.skipped == []
    out = ds.split("val").decode((64, 64), progress=False)
    assert out.shape == (153, 3, 64, 64)


def test_flowers5_dedup_split_and_decode(shared_dir, tmp_path):
    t0 = time.perf_counter()
    ds = load_dataset(shared_dir / "data" / "flowers5", progress=False)
    load_s = time.perf_counter() - t0
    assert len(ds) == 4317 and len(ds.classes) == 5 and ds.skipped == []
    groups: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(ds.content_hashes):
        groups[h].append(i)
    dups = [g for g in groups.values() if len(g) > 1]
    assert sum(len(g) - 1 for g in dups) == 6
    for g in dups:
        assert len({ds.splits[i] for i in g}) == 1
    for seed in range(5):
        other = load_dataset(shared_dir / "data" / "flowers5", seed=seed, progress=False)
        assert all(len({other.splits[i] for i in g}) == 1 for g in dups)
    assert load_s < 30
    t0 = time.perf_counter()
    out = ds.decode((224, 224), "bilinear", cache_dir=tmp_path, progress=False)
    decode_s = time.perf_counter() - t0
    assert out.shape == (4317, 3, 224, 224)
    t0 = time.perf_counter()
    again = ds.decode((224, 224), "bilinear", cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - t0 < 2.0 and again.shape == out.shape
    print(
        f"flowers5: load {load_s:.1f}s, decode 224x224 {decode_s:.1f}s, splits "
        f"{ {s: int((ds.splits == s).sum()) for s in ('train', 'test')} }"
    )
