"""Strategies partial / full / scratch / hidden, the MLP head, and pretrain (develop-model approach)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_image_folder

from transferkit.runtime import CacheLayout
from transferkit.strategies.base import FitContext

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    """tk_smallcnn pretrained (1 epoch) on a 4-class synthetic source task: a backbone folder."""
    from transferkit.data import load_dataset
    from transferkit.engine import TrainConfig
    from transferkit.pretrain import pretrain

    torch.set_num_threads(1)
    root = make_image_folder(
        tmp_path_factory.mktemp("src"), classes=("a", "b", "c", "d"), per_class=10, size=32, seed=3
    )
    out = tmp_path_factory.mktemp("bb") / "smallcnn-src"
    cfg = TrainConfig(epochs=1, batch_size=16, lr=3e-3, precision="32-true", flip=False, bn_policy="train")
    return pretrain(load_dataset(root), "tk_smallcnn", out, cfg, val_fraction=0.25, progress=False, device="cpu")


@pytest.fixture(scope="module")
def backbone(pretrained_dir):
    from transferkit.backbones import load_backbone

    return load_backbone(pretrained_dir)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from transferkit.data import load_dataset

    root = tmp_path_factory.mktemp("tgt")
    make_image_folder(root, per_class=8, splits=("train",), seed=1)
    make_image_folder(root, per_class=6, splits=("val",), seed=2)
    return load_dataset(root)


def make_ctx(backbone, dataset, tmp_path, **params) -> FitContext:
    train = np.flatnonzero(dataset.splits == "train")
    held = np.flatnonzero(dataset.splits != "train")
    return FitContext(
        backbone=backbone,
        dataset=dataset,
        train_idx=train,
        val_idx=held[::2],
        monitor_idx=held[1::2],
        params=params,
        run_dir=tmp_path / "run",
        cache=CacheLayout(tmp_path / "cache"),
        device="cpu",
        precision="fp32",
        seed=0,
        progress=False,
    )


def fit(name, backbone, dataset, tmp_path, **params):
    from transferkit.strategies import get_strategy

    strategy = get_strategy(name)
    ctx = make_ctx(backbone, dataset, tmp_path, **{**strategy.defaults, "batch_size": 8, **params})
    return strategy, ctx, strategy.fit(ctx)


def test_pretrain_writes_a_loadable_backbone_folder(pretrained_dir, backbone):
    card = json.loads((pretrained_dir / "backbone.json").read_text())
    assert card["architecture"] == "tk_smallcnn" and card["num_classes"] == 4
    metrics = json.loads((pretrained_dir / "pretrain_metrics.json").read_text())
    assert metrics["n_val"] == 8 and len(metrics["history"]) == 1 and metrics["source_val_acc"] is not None
    assert backbone.has_source_head and [c.name for c in backbone.cut_points][:2] == ["stem", "stage1"]


def test_partial_freezes_early_stages_and_round_trips(backbone, dataset, tmp_path):
    from transferkit.strategies._network import NetworkModel

    # bn_policy "eval" kept explicitly: "auto" may re-estimate the statistics (tested below)
    strategy, ctx, model = fit("partial", backbone, dataset, tmp_path, epochs=2, freeze_stages=1, bn_policy="eval")
    assert isinstance(model, NetworkModel) and model.strategy == "partial"
    from safetensors.torch import load_file

    from transferkit.engine import Checkpointer

    ref = backbone.build_network(3).state_dict()
    # The weights as the last epoch left them (the returned model may be the start, epoch 0, when no
    # epoch beat it on the selection images).
    got = load_file(str(Checkpointer(ctx.run_dir).latest() / "model.safetensors"))
    for k in ref:
        if k.startswith(("body.stem.", "body.stages.0.")):
            assert torch.equal(ref[k], got[k]), k  # weights and BN running stats untouched
    assert not torch.equal(ref["body.stages.2.conv2.conv.weight"], got["body.stages.2.conv2.conv.weight"])
    assert model.info["best_epoch"] in range(0, 3) and model.info["start_val_acc"] is not None
    assert model.info["best_val_acc"] >= model.info["start_val_acc"]  # never below its start
    assert model.info["train_config"]["bn_policy"] == "eval"
    assert model.info["frozen_groups"] == ["stem", "stage1"]
    assert len(ctx.history) == 2 and ctx.history[-1]["monitor_acc"] is not None

    images = dataset.decode((32, 32), "bilinear")
    proba = model.predict_proba(images)
    assert proba.shape == (len(dataset), 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    model.save(tmp_path / "model")
    cfg = json.loads((tmp_path / "model" / "model.json").read_text())
    assert cfg["strategy"] == "partial" and cfg["classes"] == dataset.classes and cfg["num_classes"] == 3
    again = strategy.load(tmp_path / "model", backbone)
    assert np.allclose(again.predict_proba(images), proba, atol=1e-6)


def test_epoch_0_of_a_fine_tune_is_the_linear_strategy_itself(backbone, dataset, tmp_path):
    """The fine-tunes' epoch-0 candidate is ``linear``'s model (its probe on every learnable image) in
    the network, scored by that probe's cross-validation; training starts from the train-only probe."""
    from transferkit.engine import predict_logits
    from transferkit.strategies._network import init_head_from_probe, linear_start

    _, ctx, linear = fit("linear", backbone, dataset, tmp_path)
    net = backbone.build_network(3)
    init_head_from_probe(net, ctx, backbone, "none")
    trained_from = {k: v.clone() for k, v in net.state_dict().items()}
    start = linear_start(net, ctx, backbone, "none")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in trained_from.items())  # the start is untouched
    assert start.score == pytest.approx(linear.info["cv_accuracy"])
    assert not torch.equal(start.state["head.weight"], trained_from["head.weight"])  # it learnt from val too
    net.load_state_dict(start.state)
    images = dataset.decode((32, 32), "bilinear")
    proba = torch.softmax(torch.from_numpy(predict_logits(net, images, device="cpu")), 1).numpy()
    assert np.array_equal(proba.argmax(1), linear.predict_proba(images).argmax(1))
    assert np.allclose(proba, linear.predict_proba(images), atol=1e-4)


def test_full_trains_head_first_then_everything(backbone, dataset, tmp_path):
    _, ctx, model = fit("full", backbone, dataset, tmp_path, epochs=2, head_epochs=1, lr=3e-3)
    assert [h["frozen"] for h in ctx.history] == ["stem,stage1,stage2,stage3", ""]
    from safetensors.torch import load_file

    ref = backbone.build_network(3).state_dict()
    last = load_file(str(ctx.run_dir / "checkpoints" / "epoch_0002" / "model.safetensors"))  # before best-restore
    assert not torch.equal(ref["body.stem.conv.weight"], last["body.stem.conv.weight"])
    # the restored model is the first candidate with the highest accuracy on the selection (val)
    # split, the starting network (epoch 0) included ...
    val_acc = [model.info["start_val_acc"]] + [h["val_acc"] for h in ctx.history]
    best = model.info["best_epoch"]  # an epoch replaces the start only by beating it (by a margin)
    assert best == 0 or (val_acc[best] == max(val_acc[1:]) > val_acc[0] and best == int(np.argmax(val_acc)))
    # ... and it is that epoch's network: its accuracy on the selection images is the recorded one
    # (epoch 0, linear refitted on the selection images too, is recorded by its cross-validation)
    images = dataset.decode((32, 32), "bilinear")
    pred = model.predict_proba(images[ctx.val_idx]).argmax(axis=1)
    if model.info["best_epoch"] > 0:
        assert np.mean(pred == dataset.labels[ctx.val_idx]) == pytest.approx(val_acc[model.info["best_epoch"]])
    restored = model.net.state_dict()
    assert all(torch.equal(restored[k], last[k]) for k in last) == (model.info["best_epoch"] == 2)
    assert ctx.history[1]["lr_body"] < ctx.history[1]["lr"]


def test_scratch_starts_from_random_init(backbone, dataset, tmp_path):
    from transferkit.strategies.scratch import ScratchStrategy

    assert ScratchStrategy.defaults["lr"] == pytest.approx(3e-3)
    _, ctx, model = fit("scratch", backbone, dataset, tmp_path, epochs=1)
    assert model.info["pretrained_body"] is False and model.info["init"] == "random, seed 0"
    assert len(ctx.history) == 1


def test_hidden_trains_mlp_on_pooled_features(backbone, dataset, tmp_path):
    _, ctx, model = fit("hidden", backbone, dataset, tmp_path, hidden=(16,), dropout=0.1, epochs=20)
    assert model.strategy == "hidden" and model.layer == "pool"
    assert len(ctx.history) >= 1
    proba = model.predict_proba(dataset.decode((32, 32), "bilinear"))
    assert proba.shape == (len(dataset), 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    # the recorded held-out (monitor) accuracy is the accuracy of these predictions
    monitor = ctx.monitor_idx
    acc = np.mean(proba[monitor].argmax(1) == dataset.labels[monitor])
    assert ctx.history[-1]["monitor_acc"] == pytest.approx(acc)


def test_mlp_head_learns_and_is_deterministic():
    from transferkit.strategies._mlp import train_mlp_head

    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    x = rng.normal(size=(120, 8)).astype(np.float32)
    x[np.arange(120), y] += 3
    a, ha = train_mlp_head(x[:90], y[:90], x[90:], y[90:], hidden=(16,), dropout=0.2, epochs=30, lr=1e-2, seed=1)
    b, hb = train_mlp_head(x[:90], y[:90], x[90:], y[90:], hidden=(16,), dropout=0.2, epochs=30, lr=1e-2, seed=1)
    assert max(h["val_acc"] for h in ha) >= 0.85
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    from transferkit.errors import ConfigError

    with pytest.raises(ConfigError, match="'epochs'"):
        train_mlp_head(x, y, None, None, epochs=0)
