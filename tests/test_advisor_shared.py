"""Acceptance checks of the advisor on the real weights and datasets in ../shared.

- Similarity to the mobilenetv1_075 Keras card (ImageNet): the natural-photo sets
  (hymenoptera, flowers5) score as more similar than the digit sets (MNIST, sklearn digits).
  128 stratified training images per dataset, one pass each (similarity_of_subset).
- Backbone ranking on hymenoptera: both pretrained cards rank above a randomly initialised one.
"""

from __future__ import annotations

import pytest
from conftest import MOBILENET_V1_CARD, MOBILENET_V2_CARD, SHARED

pytestmark = pytest.mark.shared

N_IMAGES = 128


@pytest.fixture(scope="module")
def v1():
    from transferkit.backbones import load_backbone

    return load_backbone(MOBILENET_V1_CARD)


@pytest.fixture(scope="module")
def scores(v1):
    from transferkit.advisor.similarity import similarity_of_subset
    from transferkit.data import load_dataset

    specs = {
        "hymenoptera": SHARED / "data" / "hymenoptera",
        "flowers5": SHARED / "data" / "flowers5",
        "mnist": SHARED / "data" / "mnist_t10k.npz",
        "digits": "digits",
    }
    return {
        name: similarity_of_subset(load_dataset(spec), v1, n_images=N_IMAGES, device="cpu")
        for name, spec in specs.items()
    }


def test_natural_photos_are_more_similar_than_digits(scores):
    report = {k: (round(s.score, 3), {n: None if v is None else round(v, 3) for n, v in s.signals.items()})
              for k, s in scores.items()}
    natural = min(scores["hymenoptera"].score, scores["flowers5"].score)
    digits = max(scores["mnist"].score, scores["digits"].score)
    assert natural > digits, report
    # The BN-statistics signal orders them on its own, too; every signal is measured.
    assert min(scores["hymenoptera"].signals["bn"], scores["flowers5"].signals["bn"]) > max(
        scores["mnist"].signals["bn"], scores["digits"].signals["bn"]), report
    for s in scores.values():
        assert all(v is not None for v in s.signals.values()), report
        assert 0.0 <= s.score <= 1.0
    assert scores["hymenoptera"].similar and not scores["digits"].similar, report


def test_rank_puts_random_init_last(tmp_path, v1):
    from transferkit.advisor import rank_backbones
    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset, per_class_subset

    data = load_dataset(SHARED / "data" / "hymenoptera")
    train = per_class_subset(data.split("train"), 60, seed=0)
    random_init = load_backbone(MOBILENET_V1_CARD, pretrained=False)
    rows = rank_backbones(train, [str(MOBILENET_V1_CARD), str(MOBILENET_V2_CARD), random_init],
                          store_dir=tmp_path / "store", device="cpu", progress=False)
    assert rows[-1]["pretrained"] is False, rows
    assert all(r["pretrained"] for r in rows[:2]), rows
    for r in rows[:2]:
        for metric in ("logme", "knn_acc", "probe_acc"):
            assert r[metric] > rows[-1][metric], rows
