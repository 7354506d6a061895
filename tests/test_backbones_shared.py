"""Backbones on the real weights in ../shared (Keras ImageNet MobileNets converted to timm layout)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.backbones import load_backbone

pytestmark = pytest.mark.shared
torch.set_num_threads(2)

ANT, BEE = 310, 309  # ImageNet class indices


@pytest.fixture(scope="module")
def v1(shared_dir):
    return load_backbone(shared_dir / "weights" / "mobilenetv1_075.keras_in1k.json")


@pytest.fixture(scope="module")
def hymenoptera(shared_dir):
    """First 12 ant and first 12 bee val images (sorted by name), whole image resized to 224 bilinear."""
    from PIL import Image

    def load(folder: Path) -> torch.Tensor:
        files = sorted(p for p in folder.iterdir() if p.is_file())[:12]
        arr = [np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)) for f in files]
        return torch.from_numpy(np.stack(arr).transpose(0, 3, 1, 2).copy())

    val = shared_dir / "data" / "hymenoptera" / "val"
    return load(val / "ants"), load(val / "bees")


def test_both_cards_load(shared_dir, v1):
    import timm
    from timm.data import resolve_data_config

    assert v1.arch == "mobilenetv1_075" and v1.pretrained and v1.has_source_head
    assert v1.num_features == 768 and v1.num_classes == 1000
    assert len(v1.source_classes) == 1000 and v1.source_classes[ANT].startswith("ant")
    assert v1.source_classes[BEE] == "bee"
    assert v1.preprocessing.mean == (0.5, 0.5, 0.5) and v1.preprocessing.std == (0.5, 0.5, 0.5)
    assert v1.preprocessing.input_size == (3, 224, 224) and v1.preprocessing.interpolation == "bilinear"
    assert v1.model.bn1.eps == pytest.approx(1e-3)  # the card's model_kwargs reached timm

    v2 = load_backbone(shared_dir / "weights" / "mobilenetv2_035.keras_in1k.json")
    assert v2.num_features == 1280 and not v2.has_source_head and v2.source_classes is None
    assert v2.preprocessing.mean == (0.5, 0.5, 0.5)
    # the card's preprocessing, not what timm would assume for the name
    timm_default = resolve_data_config({}, model=timm.create_model("mobilenetv2_035"))
    assert tuple(timm_default["mean"]) != v2.preprocessing.mean
    x = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    feats = v2.forward_layers(x, v2.layer_names)
    assert all(feats[cp.name].shape == (2, cp.channels) for cp in v2.cut_points)
    assert all(torch.isfinite(f).all() for f in feats.values())
    assert v1.weights_hash != v2.weights_hash and len(v1.weights_hash) == 64


def test_imagenet_head_recognises_ants_and_bees(v1, hymenoptera):
    ants, bees = hymenoptera
    ant_hits = (v1.source_logits(ants).topk(5, dim=1).indices == ANT).any(dim=1).sum().item()
    bee_hits = (v1.source_logits(bees).topk(5, dim=1).indices == BEE).any(dim=1).sum().item()
    print(f"mobilenetv1_075 top-5: ant {ant_hits}/12, bee {bee_hits}/12")
    assert ant_hits >= 10
    assert bee_hits >= 9


def test_card_normalisation_beats_timm_imagenet_defaults(v1, hymenoptera):
    """mean = std = 0.5 (x/127.5 - 1) is what the Keras weights expect; ImageNet mean/std runs
    without error but gives different, worse features. Measured: mean log p(true class)
    -1.59 with the card vs -2.16 with ImageNet defaults; pooled features cos ~0.92."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    ants, bees = hymenoptera
    x = torch.cat([ants, bees])
    target = torch.tensor([ANT] * len(ants) + [BEE] * len(bees))

    def score(bb):
        logp = bb.source_logits(x).log_softmax(dim=1)[torch.arange(len(x)), target].mean().item()
        return logp, bb.forward_layers(x, ["pool"])["pool"]

    card_logp, card_feats = score(v1)
    wrong = dataclasses.replace(v1.preprocessing, mean=tuple(IMAGENET_DEFAULT_MEAN), std=tuple(IMAGENET_DEFAULT_STD))
    original = v1.preprocessing
    try:
        v1.preprocessing = wrong
        wrong_logp, wrong_feats = score(v1)
    finally:
        v1.preprocessing = original
    print(f"mean log p(true class): card {card_logp:.3f}, ImageNet defaults {wrong_logp:.3f}")
    assert card_logp > wrong_logp + 0.2
    cos = torch.nn.functional.cosine_similarity(card_feats, wrong_feats).mean().item()
    assert cos < 0.98
