"""TransferClassifier through its public API on tiny data and a tiny random backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transferkit import TransferClassifier
from transferkit.errors import ConfigError, DataError, NotFittedError


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "cache"


def test_linear_fit_scores_on_held_out_val_and_reloads(tiny_card, tiny_folder, cache, tmp_path):
    run = tmp_path / "run"
    clf = TransferClassifier(backbone=tiny_card, strategy="linear", cache_dir=cache, progress=False)
    clf.fit(tiny_folder, run_dir=run)
    # split folders: trains on train/, scores on the 18 val/ images it never saw
    assert clf.split_["scored"] == {"name": "val", "n": 18}
    assert clf.classes_ == ["blue", "green", "red"]
    assert clf.metrics_["accuracy"] >= 0.8  # colour classes are easy even for random features
    assert {"config.json", "versions.json", "metrics.json", "history.json", "model"} <= {p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())
    assert config["strategy"] == "linear" and config["backbone"]["weights_hash"]

    again = TransferClassifier.load(run, cache_dir=cache)
    files = sorted((tiny_folder / "val").glob("*/*.png"))
    truth = np.array([p.parent.name for p in files])
    np.testing.assert_allclose(again.predict_proba(files), clf.predict_proba(files), atol=1e-6)
    assert again.score(tiny_folder) == pytest.approx(clf.metrics_["accuracy"])
    # the reloaded model's predictions on the 18 val files are the ones the stored accuracy was measured on
    predicted = again.predict(files)
    np.testing.assert_array_equal(predicted, clf.predict(files))
    assert np.mean(predicted == truth) == pytest.approx(again.metrics_["accuracy"])


def test_intermediate_at_named_layer(tiny_card, tiny_folder, cache):
    clf = TransferClassifier(backbone=tiny_card, strategy="intermediate", layer="stage2", cache_dir=cache,
                             progress=False).fit(tiny_folder)
    assert clf.model_.layer == "stage2"
    assert clf.metrics_["accuracy"] > 0.5


def test_intermediate_without_layer_picks_by_cross_validation(tiny_card, tiny_folder, cache):
    clf = TransferClassifier(backbone=tiny_card, strategy="intermediate", cache_dir=cache,
                             progress=False).fit(tiny_folder)
    profile = clf.model_.info["layer_profile_cv_accuracy"]
    assert clf.model_.layer == max(profile, key=profile.get)


def test_second_fit_reuses_the_feature_store(tiny_card, tiny_folder, cache):
    first = TransferClassifier(backbone=tiny_card, cache_dir=cache, progress=False).fit(tiny_folder)
    import transferkit.features as features

    seen = []
    original = features.extract_features

    def spy(*args, **kwargs):
        fs = original(*args, **kwargs)
        seen.append(fs.from_cache)
        return fs

    features.extract_features = spy
    try:
        again = TransferClassifier(backbone=tiny_card, cache_dir=cache, progress=False).fit(tiny_folder)
    finally:
        features.extract_features = original
    assert seen == [True]  # the second fit read every feature from the store
    assert again.metrics_["accuracy"] == first.metrics_["accuracy"]


def test_predict_before_fit_names_the_fix(tiny_card):
    with pytest.raises(NotFittedError, match="Call fit"):
        TransferClassifier(backbone=tiny_card).predict(np.zeros((1, 3, 32, 32), np.uint8))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"strategy": "linaer"}, r"must be one of .*Got 'linaer' instead\. Did you mean 'linear'"),
    ({"precision": "fp8"}, r"'precision' parameter must be one of"),
    ({"epochs": 0}, r"'epochs' parameter must be a positive integer"),
    ({"hidden": (512, -1)}, r"'hidden' parameter"),
])
def test_parameters_are_validated_in_fit(tiny_card, tiny_folder, kwargs, message):
    clf = TransferClassifier(backbone=tiny_card, progress=False, **kwargs)  # __init__ only stores
    with pytest.raises(ConfigError, match=message):
        clf.fit(tiny_folder)


def test_evaluate_rejects_unknown_classes(tiny_card, tiny_folder, cache, tmp_path):
    from conftest import make_image_folder

    clf = TransferClassifier(backbone=tiny_card, cache_dir=cache, progress=False).fit(tiny_folder)
    other = make_image_folder(tmp_path / "other", classes=("red", "purple"), per_class=4, splits=("train", "val"))
    with pytest.raises(DataError, match="purple"):
        clf.evaluate(other, split="val")


def test_image_array_of_wrong_shape_is_explained(tiny_card, tiny_folder, cache):
    clf = TransferClassifier(backbone=tiny_card, cache_dir=cache, progress=False).fit(tiny_folder)
    with pytest.raises(DataError, match=r"uint8 of shape \(N, 3, 32, 32\)"):
        clf.predict(np.zeros((2, 3, 16, 16), np.uint8))


def test_hidden_head_without_a_selection_split(tiny_card, tiny_folder, cache):
    """Roles with no val images (a fixed-budget study): the MLP head trains its full schedule."""
    from transferkit.api import SplitRoles
    from transferkit.data import load_dataset

    ds = load_dataset(tiny_folder, progress=False)
    roles = SplitRoles(np.flatnonzero(ds.splits == "train"), np.zeros(0, np.int64),
                       np.flatnonzero(ds.splits == "val"), "val", "none")
    clf = TransferClassifier(backbone=tiny_card, strategy="hidden", hidden=(16,), cache_dir=cache,
                             progress=False).fit(ds, roles=roles)
    assert clf.metrics_["n"] == 18 and len(clf.history_) == 1
    assert clf.history_[0]["monitor_acc"] == clf.metrics_["accuracy"]
