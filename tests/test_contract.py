"""Contract tests every registered strategy must pass (in the manner of timm's model tests).

Each test is parametrised over ``strategy_names()``: a strategy added to the registry is tested
here without touching this file. For every strategy, through the public API only:

- fit on a tiny backbone (``tk_smallcnn`` behind a backbone card, random weights) and tiny data
  with a run directory; the fitted object has ``classes_``, ``metrics_`` (accuracy in [0, 1],
  recomputed here from ``predict_proba`` on the scored split), ``history_`` (a list, also in
  ``history.json``), and the run directory records the strategy and holds ``model/``;
- ``TransferClassifier.load(run_dir)`` predicts exactly what the fitted object predicts;
- the ONNX export (what ``transferkit export`` calls), run with onnxruntime, gives the same
  probabilities within 1e-4.

``strategy="auto"``: the selection's choice reaches the strategy. The run records
``requested_strategy == "auto"``, the concrete strategy, the advice and the selection (every
candidate's cross-validated score, the trials, the reasons), and every parameter the selection
chose is in the run's parameters with the same value and is one the chosen strategy declares.
Checked with the real selection (API, CLI, ``advise``) and with the selection forced to every
registered strategy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_card
from typer.testing import CliRunner

from transferkit import TransferClassifier
from transferkit.strategies import get_strategy, strategy_names

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Settings that keep every fit to a second or two on 2 CPU cores. ``epochs`` is given explicitly
# (it overrides the strategy default, e.g. hidden's 100) so each strategy does a short schedule.
FAST = {"epochs": 2, "batch_size": 8, "device": "cpu", "precision": "fp32", "progress": False}


@pytest.fixture(scope="module")
def card(tmp_path_factory) -> Path:
    """A backbone card for tk_smallcnn (32x32 input) with seeded random weights."""
    from transferkit.backbones import register_timm_extras

    register_timm_extras()  # tk_smallcnn is a timm name once registered
    return make_tiny_card(tmp_path_factory.mktemp("smallcnn-card"), arch="tk_smallcnn", size=32)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One feature store for the module: feature strategies after the first read it."""
    return tmp_path_factory.mktemp("contract-cache")


def scored_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The held-out images of ``tiny_folder`` (its val/ split) and their class names."""
    files = sorted((folder / "val").glob("*/*.png"))
    return files, [p.parent.name for p in files]


def run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: images.astype(np.float32)})[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------- every strategy
def test_the_registry_is_not_empty_and_names_are_unique():
    names = strategy_names()
    assert len(names) >= 1 and len(set(names)) == len(names)
    for name in names:
        strategy = get_strategy(name)
        assert strategy.name == name, f"registry name {name!r} maps to a strategy called {strategy.name!r}"
        assert isinstance(strategy.defaults, dict)


@pytest.mark.parametrize("name", strategy_names())
def test_fit_load_predict_export_contract(name, card, tiny_folder, cache, tmp_path):
    from transferkit.export import export

    run = tmp_path / "run"
    clf = TransferClassifier(backbone=card, strategy=name, cache_dir=cache, **FAST).fit(tiny_folder, run_dir=run)
    files, truth = scored_files(tiny_folder)

    # fitted attributes
    assert clf.classes_ == ["blue", "green", "red"]
    assert clf.strategy_ == name
    assert isinstance(clf.history_, list) and clf.history_, "history_ must record at least one entry"
    assert clf.split_["scored"] == {"name": "val", "n": len(files)}
    acc = clf.metrics_["accuracy"]
    assert 0.0 <= acc <= 1.0
    assert clf.metrics_["n"] == len(files) and clf.metrics_["split"] == clf.split_["scored"]
    images = clf.images(files)
    assert images.dtype == np.uint8 and images.shape == (len(files), 3, 32, 32)
    proba = clf.predict_proba(images)
    assert proba.shape == (len(files), 3) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # metrics_ is the accuracy of these very predictions on the scored split
    predicted = np.asarray(clf.classes_)[proba.argmax(axis=1)]
    assert acc == pytest.approx(float(np.mean(predicted == np.asarray(truth))))
    np.testing.assert_array_equal(clf.predict(files), predicted)

    # the run directory
    config = json.loads((run / "config.json").read_text())
    assert config["strategy"] == name and config["requested_strategy"] == name
    assert config["classes"] == clf.classes_
    assert (run / "model").is_dir() and any((run / "model").iterdir())
    assert json.loads((run / "history.json").read_text()) == json.loads(json.dumps(clf.history_))
    assert json.loads((run / "metrics.json").read_text())["scored"]["accuracy"] == acc

    # reload: same predictions, same fitted attributes
    again = TransferClassifier.load(run, cache_dir=cache)
    assert again.strategy_ == name and again.classes_ == clf.classes_
    assert again.metrics_["accuracy"] == acc and again.history_ == json.loads(json.dumps(clf.history_))
    np.testing.assert_allclose(again.predict_proba(images), proba, rtol=0, atol=1e-6)
    np.testing.assert_allclose(again.predict_proba(files), proba, rtol=0, atol=1e-6)

    # ONNX, exported from the run directory as `transferkit export RUN --format onnx` does
    res = export(run, "onnx", tmp_path / "model.onnx")
    assert res.path.is_file() and res.num_classes == 3 and res.classes == clf.classes_
    logits = run_onnx(res.path, images.astype(np.float32))
    assert logits.shape == (len(files), 3)
    np.testing.assert_allclose(softmax(logits), proba, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------- strategy="auto"
def assert_auto_run(run: Path) -> dict:
    """The contract of a run fitted with strategy auto; returns its config."""
    config = json.loads((run / "config.json").read_text())
    assert config["requested_strategy"] == "auto"
    name = config["strategy"]
    assert name in strategy_names()
    advice = config["advice"]
    selection = advice["selection"]
    assert selection["strategy"] == name, "the run must train what the selection chose"
    # the advisor's own rule-based plan only emits parameters its strategy declares
    assert set(advice["params"]) <= set(get_strategy(advice["strategy"]).defaults)
    chosen = selection["params"]
    for key, value in chosen.items():
        assert key in config["params"], f"selected parameter {key!r} did not reach the {name} strategy"
        assert config["params"][key] == value, (key, value, config["params"][key])
    declared = set(get_strategy(name).defaults)
    assert set(config["params"]) <= declared, "only declared parameters reach the strategy"
    for cand in selection["candidates"]:
        assert cand["strategy"] in strategy_names() and get_strategy(cand["strategy"]).uses_feature_store
        assert 0.0 <= cand["cv_mean"] <= 1.0 and cand["cv_se"] >= 0.0 and cand["cv_folds"] >= 2
    assert selection["reasons"], "the decision must say why"
    assert (run / "model").is_dir()
    return config


@pytest.fixture(scope="module")
def auto_fit(card, tiny_folder, cache, tmp_path_factory):
    """One fit with strategy auto through the API; also keeps the advisor's ``Advice`` it used."""
    import transferkit.advisor as advisor

    seen = []
    real = advisor.advise

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    run = tmp_path_factory.mktemp("auto") / "run"
    with pytest.MonkeyPatch.context() as m:
        m.setattr(advisor, "advise", spy)
        clf = TransferClassifier(backbone=card, strategy="auto", cache_dir=cache, device="cpu", precision="fp32",
                                 progress=False).fit(tiny_folder, run_dir=run)
    assert len(seen) == 1, "fit with strategy auto must ask the advisor exactly once"
    return clf, run, seen[0]


def test_auto_through_the_api(auto_fit, tiny_folder, cache):
    clf, run, advice = auto_fit
    config = assert_auto_run(run)
    assert clf.strategy_ == config["strategy"] and clf.advice_ == config["advice"]
    assert config["advice"]["strategy"] == advice.strategy  # the advisor's measurements are kept
    cands = config["advice"]["selection"]["candidates"]
    assert {c["strategy"] for c in cands} >= {"linear", "intermediate"}, "every cheap candidate is scored"
    assert 0.0 <= clf.metrics_["accuracy"] <= 1.0
    again = TransferClassifier.load(run, cache_dir=cache)
    files, _ = scored_files(tiny_folder)
    np.testing.assert_allclose(again.predict_proba(files), clf.predict_proba(files), rtol=0, atol=1e-6)


def test_auto_through_the_cli(card, tiny_folder, cache, tmp_path):
    from transferkit.cli import app

    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "fit", str(tiny_folder), "--backbone", str(card), "--strategy", "auto", "--out", str(run),
        "--cache-dir", str(cache), "--device", "cpu", "--precision", "fp32", "--quiet", "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = assert_auto_run(run)
    summary = json.loads(result.stdout)
    assert summary["strategy"] == config["strategy"] and summary["advice"] == config["advice"]
    assert summary["params"] == config["params"]


def test_advise_shows_every_candidate_with_its_spread_and_the_decision(card, tiny_folder, cache):
    from transferkit.cli import app

    result = CliRunner().invoke(app, ["advise", str(tiny_folder), "--backbone", str(card), "--cache-dir", str(cache),
                                      "--device", "cpu", "--quiet", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    sel = out["selection"]
    assert sel["strategy"] in strategy_names() and sel["candidates"] and sel["reasons"]
    assert sel["trials"] == [], "advise runs no fine-tuning"
    text = CliRunner().invoke(app, ["advise", str(tiny_folder), "--backbone", str(card), "--cache-dir", str(cache),
                                    "--device", "cpu", "--quiet"], catch_exceptions=False).output
    assert "Four-case table" in text and "±" in text and "Decision:" in text


# What the selection chooses for each strategy, forced in the test: a feature-store strategy as the
# only cross-validated candidate; a network strategy as the only trial, against a feature-store
# score of zero so that it wins and its trial is the run's model.
FORCED_CHOICES: dict[str, dict] = {
    "linear": {"layer": "pool"},
    "intermediate": {"layer": "stage2"},
    "hidden": {},
    "head2toe": {},
    "knn": {"layer": "pool"},
    "adabn": {"layer": "pool"},
    "partial": {},
    "full": {},
    "scratch": {},
}


@pytest.mark.parametrize("name", strategy_names())
def test_auto_with_the_selection_forced_to_each_strategy(name, card, tiny_folder, cache, tmp_path, monkeypatch):
    """Whatever the selection picks, that strategy with the selected parameters is what the run trains."""
    import transferkit.advisor.select as select_mod

    if name not in FORCED_CHOICES:
        pytest.fail(f"strategy {name!r} is registered but FORCED_CHOICES has no forced selection for it: add one")
    cls = get_strategy(name)
    if cls.uses_feature_store:
        forced = select_mod.CandidateScore(strategy=name, params=FORCED_CHOICES[name], mean=0.9, se=0.01, folds=5,
                                           seconds=0.0, complexity=cls.complexity)
        monkeypatch.setattr(select_mod, "score_candidates", lambda *a, **k: [forced])
    else:
        monkeypatch.setattr(select_mod, "network_arms", lambda *a, **k: ([name], ["forced by the test"]))
        monkeypatch.setattr(select_mod, "holdout_accuracy", lambda *a, **k: (0.0, np.zeros(0, bool)))
        # no epoch-0 candidate: a trial that ends at its start (linear itself) is not a fine-tune to keep
        monkeypatch.setattr("transferkit.engine.loop.adopt_start", lambda run, start: None)
    run = tmp_path / "run"
    clf = TransferClassifier(backbone=card, strategy="auto", cache_dir=cache, device="cpu", precision="fp32",
                             batch_size=8, epochs=2, progress=False).fit(tiny_folder, run_dir=run)
    config = assert_auto_run(run)
    assert config["strategy"] == clf.strategy_ == name
    if not cls.uses_feature_store:
        trial = config["advice"]["selection"]["trials"][0]
        assert trial["strategy"] == name and trial["epochs_run"] == 2  # on course all the way
        assert clf.history_, "the trial's history is the run's history"
    again = TransferClassifier.load(run, cache_dir=cache)
    files, _ = scored_files(tiny_folder)
    np.testing.assert_allclose(again.predict_proba(files), clf.predict_proba(files), rtol=0, atol=1e-6)


def test_auto_does_not_keep_a_trial_that_ended_at_its_start(card, tiny_folder, cache, tmp_path, monkeypatch):
    """A fine-tune whose best candidate is epoch 0 (linear itself, refitted on the selection images)
    is no fine-tune: auto keeps the feature-store candidate, however low its score there."""
    import transferkit.advisor.select as select_mod
    import transferkit.engine.loop as loop_mod

    monkeypatch.setattr(select_mod, "network_arms", lambda *a, **k: (["partial"], ["forced by the test"]))
    monkeypatch.setattr(select_mod, "holdout_accuracy", lambda *a, **k: (0.0, np.zeros(0, bool)))
    adopt = loop_mod.adopt_start

    def unbeatable(run, start):  # no epoch can beat this start
        adopt(run, start)
        run.best_acc = 2.0

    monkeypatch.setattr(loop_mod, "adopt_start", unbeatable)
    run = tmp_path / "run"
    clf = TransferClassifier(backbone=card, strategy="auto", cache_dir=cache, device="cpu", precision="fp32",
                             batch_size=8, epochs=2, progress=False).fit(tiny_folder, run_dir=run)
    config = assert_auto_run(run)
    trial = config["advice"]["selection"]["trials"][0]
    assert trial["strategy"] == "partial" and trial["best_val_acc"] is None
    assert "no epoch beat its start" in trial["stopped"]
    assert get_strategy(clf.strategy_).uses_feature_store
