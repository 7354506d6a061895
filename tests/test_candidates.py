"""Behaviour of the feature-store candidates head2toe, adabn and knn, and the CV interface ``auto`` scores.

(Fitting, reloading and ONNX export of every strategy are in ``test_contract.py``.) Tiny backbone
cards with random weights and tiny image folders from ``conftest``; feature arrays built here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_card
from safetensors.torch import load_file

from transferkit import TransferClassifier
from transferkit.errors import ConfigError, StoreError
from transferkit.strategies import strategy_class, strategy_names

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"device": "cpu", "precision": "fp32", "progress": False}


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> Path:
    from transferkit.backbones import register_timm_extras

    register_timm_extras()
    return make_tiny_card(tmp_path_factory.mktemp("card"), arch="tk_smallcnn", size=32)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def blobs(n_per_class: int, dim: int, num_classes: int, seed: int, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 3
    y = np.repeat(np.arange(num_classes), n_per_class)
    return (centres[y] + rng.normal(size=(len(y), dim)) * spread * 3).astype(np.float32), y


# ---------------------------------------------------------------------------------------- knn
def test_knn_with_k_1_predicts_the_label_of_the_most_similar_training_image():
    knn = strategy_class("knn")
    x, y = blobs(10, 16, 3, seed=0, spread=2.0)  # overlapping classes: neighbours often disagree
    head = knn.fit_arrays({"pool": x}, y, 3, {"layer": "pool", "k": 1}, seed=0)
    queries = np.random.default_rng(1).normal(size=(50, 16)).astype(np.float32) * 6
    mean = x.mean(0)
    a = (x - mean) / np.linalg.norm(x - mean, axis=1, keepdims=True)
    b = (queries - mean) / np.linalg.norm(queries - mean, axis=1, keepdims=True)
    nearest = y[np.argmax(b @ a.T, axis=1)]
    proba = head({"pool": queries})
    np.testing.assert_array_equal(proba.argmax(1), nearest)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    assert proba.max(1).min() > 0.99  # one vote: the neighbour's class takes (almost) all


def test_knn_chooses_k_by_leave_one_out_and_a_larger_k_outvotes_label_noise():
    knn = strategy_class("knn")
    x, y = blobs(15, 8, 2, seed=2, spread=0.2)
    noisy = y.copy()
    noisy[[0, 1, 2, 15, 16]] = 1 - noisy[[0, 1, 2, 15, 16]]  # mislabelled training images
    head = knn.fit_arrays({"pool": x}, noisy, 2, {"layer": "pool", "k": None}, seed=0)
    assert head.info["k"] > 1, head.info
    loo = head.info["loo_accuracy_by_k"]
    assert loo[head.info["k"]] == max(loo.values()) > loo[1]
    # a clean copy of the mislabelled images is classified by its cluster, not by its mislabelled twin
    np.testing.assert_array_equal(head({"pool": x[[0, 1, 2, 15, 16]]}).argmax(1), y[[0, 1, 2, 15, 16]])


def test_knn_refuses_a_bad_k():
    x, y = blobs(4, 4, 2, seed=0)
    with pytest.raises(ConfigError, match="'k'"):
        strategy_class("knn").fit_arrays({"pool": x}, y, 2, {"layer": "pool", "k": 0}, seed=0)


# ----------------------------------------------------------------------------------- head2toe
def test_head2toe_keeps_the_features_of_the_layer_that_carries_the_labels():
    h2t = strategy_class("head2toe")
    rng = np.random.default_rng(0)
    informative, y = blobs(20, 6, 3, seed=3, spread=0.5)
    features = {"stage1": rng.normal(size=(60, 120)).astype(np.float32),  # wide and useless
                "stage2": np.concatenate([informative, rng.normal(size=(60, 34)).astype(np.float32)], 1)}
    head = h2t.fit_arrays(features, y, 3, {"keep_fraction": 0.04}, seed=0)  # 7 of 160 columns
    kept = head.module.keep.numpy()
    assert len(kept) == 7
    assert np.isin(np.arange(120, 126), kept).sum() >= 5, kept  # the informative columns of stage2
    assert head.info["kept_by_layer"]["stage1"] <= 2
    assert (head(features).argmax(1) == y).mean() > 0.9
    chosen = h2t.fit_arrays(features, y, 3, {"keep_fraction": None}, seed=0)  # the fraction by CV
    assert set(chosen.info["cv_accuracy_by_fraction"]) == {0.05, 0.1, 0.25, 0.5, 1.0}
    assert chosen.info["cv_accuracy"] == max(chosen.info["cv_accuracy_by_fraction"].values())


def test_head2toe_reads_every_cut_point_but_the_stem(card, tiny_folder, cache, tmp_path):
    clf = TransferClassifier(backbone=card, strategy="head2toe", cache_dir=cache, **FAST).fit(
        tiny_folder, run_dir=tmp_path / "run")
    cut = [cp.name for cp in clf.backbone_.cut_points if cp.name != "stem"]
    saved = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    # every non-stem cut point is read; only a layer identical to an earlier one (pool = the last
    # stage's average here) is dropped from the concatenation
    assert saved["layers"] == clf.model_.info["layers"]
    assert set(saved["layers"]) | {"pool"} == set(cut) and len(saved["layers"]) >= len(cut) - 1
    assert clf.model_.info["keep_fraction"] in (0.05, 0.1, 0.25, 0.5, 1.0)
    assert sum(clf.model_.info["kept_by_layer"].values()) == clf.model_.info["kept_features"]
    with pytest.raises(ConfigError, match="keep_fraction"):
        TransferClassifier(backbone=card, strategy="head2toe", params={"keep_fraction": 1.5}, cache_dir=cache,
                           **FAST).fit(tiny_folder)


# -------------------------------------------------------------------------------------- adabn
def test_adabn_reestimates_and_saves_the_batchnorm_statistics_of_the_training_images(card, tiny_folder, cache,
                                                                                       tmp_path):
    from transferkit.backbones import load_backbone
    from transferkit.strategies._store_head import batchnorm_state

    run = tmp_path / "run"
    clf = TransferClassifier(backbone=card, strategy="adabn", cache_dir=cache, **FAST).fit(tiny_folder, run_dir=run)
    source = batchnorm_state(clf.backbone_.model)
    saved = {k[len("bn."):]: v for k, v in load_file(str(run / "model" / "model.safetensors")).items()
             if k.startswith("bn.")}
    assert set(saved) == set(source) and source
    for key in source:  # every statistic moved away from the source network's
        assert not torch.allclose(saved[key], source[key], atol=1e-3), key
    # the first BatchNorm's mean is the per-channel mean of its input over the training-role images
    adapted = clf.model_.feature_backbone
    first = next(name for name, m in adapted.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = adapted.model.get_submodule(first).register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    train = sorted((tiny_folder / "train").glob("*/*.png"))
    adapted.forward_layers(torch.from_numpy(clf.images(train)), ["pool"])
    hook.remove()
    np.testing.assert_allclose(saved[f"{first}.running_mean"].numpy(), seen[0].mean((0, 2, 3)).numpy(),
                               rtol=1e-4, atol=1e-4)
    assert clf.model_.info["adaptation"]["identity"]["n_images"] == len(train)  # not the scored val/ images
    # reload reproduces the adapted model; other backbone weights are refused
    again = TransferClassifier.load(run, cache_dir=cache)
    files = sorted((tiny_folder / "val").glob("*/*.png"))
    np.testing.assert_allclose(again.predict_proba(files), clf.predict_proba(files), atol=1e-6)
    other = load_backbone(str(make_tiny_card(tmp_path / "other", arch="tk_smallcnn", size=32, seed=1)))
    with pytest.raises(StoreError, match="weights"):
        strategy_class("adabn").load(run / "model", other)


def context(card, folder, cache, tmp_path):
    """A FitContext on the tiny folder, and its roles (as ``TransferClassifier.fit`` would split them)."""
    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset
    from transferkit.data.roles import split_roles
    from transferkit.runtime import CacheLayout
    from transferkit.strategies.base import FitContext

    ds = load_dataset(folder)
    roles = split_roles(ds, 0.2, 0)
    return FitContext(backbone=load_backbone(str(card)), dataset=ds, train_idx=roles.train, val_idx=roles.val,
                      monitor_idx=roles.scored, params={}, run_dir=tmp_path, cache=CacheLayout(cache),
                      device="cpu", precision="fp32", progress=False), roles


def test_adabn_features_have_their_own_store_keys(card, tiny_folder, cache, tmp_path):
    from transferkit.strategies._probe import stored_features
    from transferkit.strategies.base import FitContext

    ctx, roles = context(card, tiny_folder, cache, tmp_path)
    adabn = strategy_class("adabn")
    adapted = adabn.candidate_features(ctx, {"layer": "stage2"})["stage2"]
    plain = stored_features(ctx, ["stage2"]).features["stage2"]
    assert adapted.shape == plain.shape and not np.allclose(adapted, plain, atol=1e-4)
    # a different training set is a different adaptation (its own statistics, its own features)
    ctx2 = FitContext(**{**ctx.__dict__, "train_idx": roles.train[:-3], "history": []})
    other = adabn.candidate_features(ctx2, {"layer": "stage2"})["stage2"]
    assert not np.allclose(other[roles.val], adapted[roles.val], atol=1e-5)


def test_adabn_extracts_only_the_images_it_learns_from(card, tiny_folder, cache, tmp_path):
    """Without monitored images its forward pass covers the learnable ones; the other rows are NaN (never
    read), and the learnable rows are those of a pass over the whole dataset."""
    from transferkit.features import extract_features
    from transferkit.strategies._probe import learnable_indices
    from transferkit.strategies.adabn import adapted_backbone
    from transferkit.strategies.base import FitContext

    ctx, roles = context(card, tiny_folder, cache, tmp_path)
    ctx = FitContext(**{**ctx.__dict__, "monitor_idx": None, "history": []})
    feats = strategy_class("adabn").candidate_features(ctx, {"layer": "stage2"})["stage2"]
    learn = learnable_indices(ctx)
    assert len(roles.scored) and np.isnan(feats[roles.scored]).all() and np.isfinite(feats[learn]).all()
    whole = extract_features(adapted_backbone(ctx)[0], ctx.dataset, ["stage2"], store_dir=cache / "features",
                             device="cpu", precision="fp32", progress=False).features["stage2"]
    np.testing.assert_allclose(feats[learn], whole[learn], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- CV interface
@pytest.mark.parametrize("name", strategy_names(feature_store=True))
def test_every_feature_store_strategy_declares_its_candidates(name, card):
    from transferkit.backbones import load_backbone

    bb = load_backbone(str(card))
    cls = strategy_class(name)
    candidates = cls.cv_candidates(bb)
    assert isinstance(candidates, list)
    for params in candidates:
        cls.check_params(params, "cv_candidates")  # only declared parameters
        assert set(cls.candidate_layers(bb, params)) <= set(bb.layer_names)


@pytest.mark.parametrize("name", ["linear", "head2toe", "knn"])
def test_fit_arrays_predicts_probabilities_for_other_rows(name):
    rng = np.random.default_rng(0)
    x, y = blobs(12, 10, 3, seed=5)
    features = {"stage2": rng.normal(size=(36, 7)).astype(np.float32), "pool": x}
    cls = strategy_class(name)
    layers = cls.candidate_layers(type("B", (), {"cut_points": []})(), {}) if name != "head2toe" else ["stage2", "pool"]
    head = cls.fit_arrays({k: features[k] for k in layers}, y, 4, {}, seed=0)
    proba = head({k: v[:5] for k, v in features.items()})
    assert proba.shape == (5, 4)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert proba[:, 3].max() < 1e-3  # a class absent from the fold is never predicted
    assert (head(features).argmax(1) == y).mean() > 0.9


def test_what_auto_scores_is_what_fit_trains(card, tiny_folder, cache, tmp_path):
    """A strategy's fit and its fit_arrays on the same rows give the same probabilities."""
    from transferkit.strategies._probe import learnable_indices

    ctx, roles = context(card, tiny_folder, cache, tmp_path)
    ds = ctx.dataset
    files = [Path(ds.sources[i]) for i in roles.scored]
    for name in ("linear", "head2toe", "knn"):
        clf = TransferClassifier(backbone=card, strategy=name, cache_dir=cache, **FAST).fit(ds, roles=roles)
        cls = strategy_class(name)
        feats = cls.candidate_features(ctx, {**cls.defaults})
        idx = learnable_indices(ctx)
        head = cls.fit_arrays({k: v[idx] for k, v in feats.items()}, ds.labels[idx], 3, {**cls.defaults}, 0)
        np.testing.assert_allclose(head({k: v[roles.scored] for k, v in feats.items()}), clf.predict_proba(files),
                                   atol=1e-4)


def test_auto_scores_candidates_with_the_same_features_once(card, tiny_folder, cache, tmp_path, monkeypatch):
    """intermediate at the final codes is linear (on most backbones the last cut point pooled is the
    final codes): cross-validated once, listed under both names with the same score."""
    from transferkit.advisor.select import score_candidates
    from transferkit.strategies import _probe
    from transferkit.strategies._probe import learnable_indices

    ctx, _ = context(card, tiny_folder, cache, tmp_path)
    monkeypatch.setattr(strategy_class("intermediate"), "cv_candidates",
                        classmethod(lambda cls, backbone: [{"layer": "pool"}, {"layer": "stage2"}]))
    calls = []
    real = _probe.probe_fold_scores
    monkeypatch.setattr(_probe, "probe_fold_scores", lambda x, *a, **k: calls.append(x.shape) or real(x, *a, **k))
    scores = {c.label: c for c in score_candidates(ctx, learnable_indices(ctx), 0, similar=True)}
    linear, same, other = scores["linear(layer=pool)"], scores["intermediate(layer=pool)"], \
        scores["intermediate(layer=stage2)"]
    assert (same.mean, same.se, same.folds) == (linear.mean, linear.se, linear.folds)
    assert len(calls) == len(set(calls)) and other.folds == linear.folds  # pool once (head2toe probes too)


# ------------------------------------------------------------------------------ real data
@pytest.mark.shared
def test_candidates_on_real_hymenoptera_beat_chance_and_export(shared_dir, tmp_path):
    """mobilenetv1_075 on 30 ants + 30 bees (scored on 20 + 20 held-out): each candidate is far above
    chance, and its ONNX export (adabn: with the adapted statistics inside) gives its probabilities."""
    import onnxruntime as ort

    from transferkit.data import load_dataset
    from transferkit.data.roles import per_class_pick
    from transferkit.export import export

    ds = load_dataset(str(shared_dir / "data" / "hymenoptera"))
    train = per_class_pick(np.flatnonzero(ds.splits == "train"), ds.labels, 30, 0)
    scored = per_class_pick(np.flatnonzero(ds.splits == "val"), ds.labels, 20, 0)
    task = ds.subset(np.sort(np.concatenate([train, scored])))
    card = str(shared_dir / "weights" / "mobilenetv1_075.keras_in1k.json")
    for name in ("head2toe", "adabn", "knn"):
        run = tmp_path / name
        clf = TransferClassifier(backbone=card, strategy=name, cache_dir=tmp_path / "cache", batch_size=32,
                                 **FAST).fit(task, run_dir=run)
        assert clf.metrics_["accuracy"] >= 0.75, (name, clf.metrics_["accuracy"])
        images = clf.images([Path(task.sources[i]) for i in np.flatnonzero(task.splits == "val")[:8]])
        path = export(run, "onnx", tmp_path / f"{name}.onnx").path
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = sess.run(None, {sess.get_inputs()[0].name: images.astype(np.float32)})[0]
        proba = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(proba / proba.sum(1, keepdims=True), clf.predict_proba(images), atol=1e-4)


def test_knn_with_a_given_k_records_no_selection_score(card, tiny_folder, cache, tmp_path):
    clf = TransferClassifier(backbone=card, strategy="knn", params={"k": 1}, cache_dir=cache, **FAST).fit(
        tiny_folder, run_dir=tmp_path / "run")
    assert clf.model_.info["k"] == 1 and "loo_accuracy_by_k" not in clf.model_.info
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == clf.history_  # no NaN
    assert "val_acc" not in clf.history_[0] and 0 <= clf.history_[0]["monitor_acc"] <= 1
