"""The fine-tuning recipe (issue 12): warm-up by default, the BatchNorm policy chosen from the measured
divergence, class imbalance handled; each resolved at fit time and recorded in the run's config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_image_folder, make_tiny_card

from transferkit import TransferClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def three_splits(root, train_counts, seed):
    """train/ with ``train_counts`` images per class (red, green, blue), val/ and test/ with 3 each: the
    selection images are the val folder, so the tests know which images train and which select."""
    for name, n in zip(("red", "green", "blue"), train_counts, strict=True):
        make_image_folder(root, classes=(name,), per_class=n, splits=("train",), seed=seed + len(name))
    make_image_folder(root, per_class=3, splits=("val",), seed=seed + 10)
    make_image_folder(root, per_class=3, splits=("test",), seed=seed + 20)
    return root


@pytest.fixture(scope="module")
def balanced_folder(tmp_path_factory):
    return three_splits(tmp_path_factory.mktemp("bal"), (8, 8, 8), seed=1)


@pytest.fixture(scope="module")
def imbalanced_folder(tmp_path_factory):
    return three_splits(tmp_path_factory.mktemp("imb"), (15, 5, 5), seed=2)  # ratio 3


@pytest.fixture(scope="module")
def matched_card(tmp_path_factory, tiny_card, balanced_folder):
    """The tiny card with its BatchNorm statistics re-estimated on ``balanced_folder``'s training
    images: a backbone whose source statistics are the target's (divergence near 0)."""
    from safetensors.torch import save_file

    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset
    from transferkit.engine import reestimate_bn_statistics

    ds = load_dataset(balanced_folder)
    images = ds.decode((32, 32), "bilinear")[np.flatnonzero(ds.splits == "train")]
    net = load_backbone(tiny_card).build_network(3)
    assert reestimate_bn_statistics(net, images, batch_size=32, device="cpu") > 0  # as the fit does
    folder = tmp_path_factory.mktemp("matched")
    card = make_tiny_card(folder)
    save_file({k: v.contiguous() for k, v in net.body.state_dict().items()}, str(folder / "tiny.safetensors"))
    return card


def fit(card, data, tmp_path, strategy="partial", **params):
    clf = TransferClassifier(backbone=card, strategy=strategy, epochs=params.pop("epochs", 1), batch_size=8,
                             params=params, device="cpu", precision="fp32", cache_dir=tmp_path / "cache",
                             progress=False)
    clf.fit(data, run_dir=tmp_path / "run")
    return clf, json.loads((tmp_path / "run" / "config.json").read_text())


def test_warmup_by_default_rises_to_the_learning_rate_in_one_epoch(tiny_card, balanced_folder, tmp_path):
    clf, config = fit(tiny_card, balanced_folder, tmp_path, epochs=5, lr=2e-3)
    assert config["params"]["warmup_epochs"] == "auto"
    assert config["recipe"]["warmup"]["warmup_epochs"] == 1.0  # one epoch: at most a fifth of 5
    lrs = [row["lr"] for row in clf.history_]  # the head's lr at the start of each epoch
    assert lrs[0] < 2e-3 / 3  # the first steps are small
    assert lrs[1] == pytest.approx(2e-3)  # the warm-up ends at the lr asked for ...
    assert lrs[1] > lrs[2] > lrs[3] > lrs[4]  # ... then the cosine decay


def test_bn_policy_auto_keeps_matching_statistics(matched_card, balanced_folder, tmp_path):
    clf, config = fit(matched_card, balanced_folder, tmp_path)
    bn = config["recipe"]["batchnorm"]
    assert bn["requested"] == "auto" and bn["resolved"] == "eval" and bn["adabn"] is False
    assert bn["bn_divergence"] < bn["threshold"] and "source statistics are kept" in bn["reason"]
    assert clf.model_.info["train_config"]["bn_policy"] == "eval"


def test_bn_policy_auto_proposes_adabn_for_far_statistics_and_keeps_the_better_start(tiny_card, balanced_folder,
                                                                                     tmp_path):
    """The random tiny card's statistics are far from the data's: AdaBN is proposed, and kept only when the
    probe on its features beats the one on the source features by one standard error in cross-validation
    (the score epoch 0 carries)."""
    clf, config = fit(tiny_card, balanced_folder, tmp_path)
    bn = config["recipe"]["batchnorm"]
    assert bn["bn_divergence"] > bn["threshold"]
    scores = bn["start_scores"]
    assert 0 < scores["margin"] < 0.2 and "cross-validated" in scores["metric"]
    adabn_won = scores["re-estimated"] > scores["source statistics"] + scores["margin"]
    assert bn["resolved"] == ("adabn" if adabn_won else "eval") and bn["adabn"] is adabn_won
    assert ("re-estimated" in clf.model_.info["head_init"]["kind"]) is adabn_won
    # epoch 0 is the kept start's statistics with linear's probe refitted on every learnable image,
    # scored by its cross-validation
    epoch0 = clf.model_.info["head_init"]["epoch0"]["score"]
    assert clf.model_.info["start_val_acc"] == pytest.approx(epoch0)
    assert epoch0 == pytest.approx(scores["re-estimated" if adabn_won else "source statistics"], abs=1e-4)


def test_bn_policy_adabn_reestimates_the_statistics_before_the_probe(tiny_card, matched_card, balanced_folder,
                                                                     tmp_path):
    from safetensors.torch import load_file

    clf, config = fit(tiny_card, balanced_folder, tmp_path, freeze_stages=1, bn_policy="adabn")
    bn = config["recipe"]["batchnorm"]
    assert bn["adabn"] is True and bn["layers_reestimated"] > 0 and "start_scores" not in bn
    assert "re-estimated" in clf.model_.info["head_init"]["kind"]
    # the frozen stem's statistics now are the training images' (those of the matched card), not the source's
    start = load_file(str(tmp_path / "run" / "checkpoints" / "epoch_0001" / "model.safetensors"))
    matched = load_file(str(matched_card.parent / "tiny.safetensors"))
    source = load_file(str(tiny_card.parent / "tiny.safetensors"))
    key = next(k for k in matched if k.endswith("running_var"))
    assert torch.allclose(start["body." + key], matched[key], rtol=1e-3)
    assert not torch.allclose(start["body." + key], source[key], rtol=1e-1)


def test_imbalanced_classes_get_class_weights_and_balanced_selection(tiny_card, imbalanced_folder, tmp_path):
    clf, config = fit(tiny_card, imbalanced_folder, tmp_path, epochs=2)
    imb = config["recipe"]["imbalance"]
    assert imb["class_weight"] == "balanced" and imb["selection_metric"] == "balanced_accuracy"
    assert imb["imbalance_ratio"] == pytest.approx(3.0) and sorted(imb["class_counts"]) == [5, 5, 15]
    info = clf.model_.info
    assert info["selection_metric"] == "balanced_accuracy" and info["head_init"]["class_weight"] == "balanced"
    # the kept network is the candidate with the best balanced accuracy on the selection images
    scores = [info["start_val_acc"]] + [row["val_balanced_acc"] for row in clf.history_]
    best = info["best_epoch"]  # an epoch replaces the start only by beating it (by a margin)
    assert best == 0 or (scores[best] == max(scores[1:]) > scores[0] and best == int(np.argmax(scores)))
    assert info["best_val_acc"] == pytest.approx(scores[best])
    if info["best_epoch"] > 0:  # a trained epoch: its recorded score is its score on the selection images
        assert clf.evaluate(imbalanced_folder, split="val")["balanced_accuracy"] == pytest.approx(max(scores))
    else:  # epoch 0 learnt from the selection images too; its score is the probe's cross-validated one
        assert info["start_val_acc"] == pytest.approx(info["head_init"]["epoch0"]["score"])
        assert "balanced accuracy in cross-validation" in info["head_init"]["epoch0"]["source"]
    assert clf.history_[0]["val_acc"] is not None  # plain accuracy is still recorded


def test_balanced_classes_keep_plain_accuracy_and_short_runs_warm_up_a_fifth(tiny_card, balanced_folder, tmp_path):
    clf, config = fit(tiny_card, balanced_folder, tmp_path, strategy="full", class_weight="auto")
    assert config["recipe"]["imbalance"]["class_weight"] == "none"
    assert clf.model_.info["selection_metric"] == "accuracy"
    assert config["recipe"]["warmup"]["warmup_epochs"] == pytest.approx(0.2)  # a fifth of one epoch


def test_linear_probe_weighs_imbalanced_classes(tiny_card, balanced_folder, imbalanced_folder, tmp_path):
    clf = TransferClassifier(backbone=tiny_card, strategy="linear", cache_dir=tmp_path, progress=False)
    assert clf.fit(imbalanced_folder).model_.info["class_weight"] == "balanced"
    assert clf.model_.info["cv_metric"] == "balanced_accuracy"
    assert clf.fit(balanced_folder).model_.info["class_weight"] == "none"


def test_class_weighted_loss_weighs_each_class_equally():
    from transferkit.engine.balance import TrainingLoss, balanced_weights, imbalance_ratio

    y = torch.tensor([0, 0, 0, 1])
    assert imbalance_ratio(y.numpy()) == 3.0
    w = balanced_weights(y.numpy())
    assert np.allclose(w, [4 / 6, 4 / 2])  # n / (classes * count)
    logits = torch.zeros(4, 3)
    logits[3, 1] = -2.0  # the minority image is badly classified
    weighted = TrainingLoss(0.0, w)(logits, y)
    plain = TrainingLoss()(logits, y)
    assert weighted > plain  # the minority class's error counts as much as the majority's
    with pytest.raises(Exception, match="class_weight"):
        from transferkit.engine import TrainConfig

        TrainConfig(class_weight="sometimes")


def test_reestimated_statistics_are_those_of_the_images(tiny_card):
    from transferkit.backbones import load_backbone
    from transferkit.engine import reestimate_bn_statistics

    net = load_backbone(tiny_card).build_network(2)
    images = np.random.default_rng(0).integers(0, 255, (20, 3, 32, 32), dtype=np.uint8)
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = {}
    hook = bn.register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0].detach()))
    reestimate_bn_statistics(net, images, batch_size=64, device="cpu")  # one batch: exact statistics
    hook.remove()
    x = seen["x"]
    assert torch.allclose(bn.running_mean, x.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, x.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
    assert not net.training and bn.momentum == 0.1  # everything restored


@pytest.mark.shared
@pytest.mark.slow
def test_partial_on_real_imbalanced_breastmnist_ends_above_the_majority_rate(shared_dir, tmp_path):
    """breastmnist (ultrasound, 73% benign+normal): 200 training images, 2 epochs of partial. Before the
    recipe, partial ended below the majority-class rate on it (issue 12)."""
    from conftest import MOBILENET_V1_CARD

    from transferkit.data import load_dataset
    from transferkit.data.roles import per_class_pick, split_roles

    base = load_dataset(shared_dir / "data" / "breastmnist.npz")
    roles = split_roles(base, 0.15, 0)
    train = np.flatnonzero(base.splits == "train")
    keep = np.sort(np.concatenate([np.random.default_rng(0).choice(train, 200, replace=False), roles.val,
                                   per_class_pick(roles.scored, base.labels, 60, 0)]))
    ds = base.subset(keep)
    clf = TransferClassifier(backbone=MOBILENET_V1_CARD, strategy="partial", epochs=2, cache_dir=tmp_path,
                             progress=False).fit(ds, run_dir=tmp_path / "run")
    y = ds.labels[ds.splits == "test"]
    majority = np.bincount(y).max() / len(y)
    assert clf.model_.info["recipe"]["imbalance"]["class_weight"] == "balanced"
    assert clf.metrics_["accuracy"] >= majority and clf.metrics_["balanced_accuracy"] > 0.6
