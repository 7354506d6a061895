"""Fast tests of transferkit.advisor: transferability scores on synthetic arrays, and the
similarity / size / plan / rank measurements on a tiny BN network and tiny datasets."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit.advisor import transferability as tr
from transferkit.errors import ConfigError

# ------------------------------------------------------------------------- transferability


def _blobs(n=300, d=32, c=3, sep=2.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    centers = rng.normal(size=(c, d)) * sep
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def _naive_evidence(f, y, alpha, beta):
    """Log evidence / N of Bayesian linear regression computed directly with D x D matrices."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, logdet = np.linalg.slogdet(a)
    ev = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * logdet
          - beta / 2 * np.sum((y - f @ m) ** 2) - alpha / 2 * m @ m - n / 2 * np.log(2 * np.pi))
    return ev / n


@pytest.mark.parametrize("n,d", [(200, 16), (40, 64)])  # N > D and N < D (rank-deficient)
def test_logme_evidence_matches_direct_formula_and_is_a_maximum(n, d):
    f, y = _blobs(n=n, d=d, c=2, seed=1)
    f = f.astype(np.float64)
    target = (y == 1).astype(np.float64)
    u, s2 = tr._thin_svd(f)
    ev, alpha, beta = tr._logme_evidence(target, u, s2, n, d, tol=1e-9, max_iter=1000)
    assert ev == pytest.approx(_naive_evidence(f, target, alpha, beta), rel=1e-6, abs=1e-8)
    # The fixed point maximises the evidence: moving alpha or beta lowers it.
    for fa, fb in [(1.5, 1), (1 / 1.5, 1), (1, 1.5), (1, 1 / 1.5)]:
        assert _naive_evidence(f, target, alpha * fa, beta * fb) < ev


def test_logme_prefers_separating_features_over_noise():
    f, y = _blobs()
    noise = np.random.default_rng(5).normal(size=f.shape).astype(np.float32)
    assert tr.logme(f, y) > tr.logme(noise, y) + 0.5
    per_class = tr.logme_per_class(f, y)
    assert per_class.shape == (3,)
    assert tr.logme(f, y) == pytest.approx(per_class.mean())


def test_logme_wide_features_and_bad_input():
    f, y = _blobs(n=30, d=200)
    assert np.isfinite(tr.logme(f, y))
    with pytest.raises(ConfigError, match="2-D"):
        tr.logme(f[0], y)
    with pytest.raises(ConfigError, match="NaN"):
        tr.logme(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]))


def test_leep_and_entropy_on_known_cases():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    # A source head whose first three classes track the labels, and one that ignores them.
    informed = np.full((400, 10), 0.02)
    informed[np.arange(400), y] = 0.82
    uninformed = rng.dirichlet(np.ones(10), 400)
    assert tr.leep(informed, y) > tr.leep(uninformed, y)
    assert tr.leep(informed, y) <= 0
    assert tr.normalized_leep(informed, y) > 0.5
    assert tr.normalized_leep(uninformed, y) < 0.1
    # Deterministic one-to-one source classes: LEEP = 0, normalised 1.
    onehot = np.eye(10)[y]
    assert tr.leep(onehot, y) == pytest.approx(0.0, abs=1e-9)
    assert tr.normalized_leep(onehot, y) == pytest.approx(1.0)
    # Entropy: one-hot 0, uniform 1.
    assert tr.source_entropy(onehot) == pytest.approx(0.0, abs=1e-6)
    assert tr.source_entropy(np.full((5, 10), 0.1)) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="softmax"):
        tr.leep(np.ones((4, 3)), np.array([0, 1, 0, 1]))


def test_knn_and_probe_accuracy():
    f, y = _blobs()
    noise = np.random.default_rng(5).normal(size=f.shape)
    assert tr.knn_accuracy(f, y, k=5) > 0.95
    assert tr.knn_accuracy(noise, y, k=5) < 0.5
    assert tr.probe_accuracy(f, y) > 0.95
    assert tr.probe_accuracy(noise, y) < 0.5
    # Subsampling keeps it bounded and stratified.
    assert tr.knn_accuracy(f, y, k=5, max_samples=100) > 0.9
    # A class with a single sample cannot be cross-validated.
    assert np.isnan(tr.probe_accuracy(f[:5], np.array([0, 0, 1, 1, 2])))
    assert tr.chance_accuracy(np.array([0, 0, 0, 1])) == 0.75


# ------------------------------------------------------------------------------ similarity

from transferkit.advisor import plan as plan_mod  # noqa: E402
from transferkit.advisor import rules as rules_mod  # noqa: E402
from transferkit.advisor import similarity as sim  # noqa: E402
from transferkit.advisor import size as size_mod  # noqa: E402
from transferkit.strategies import strategy_defaults, strategy_names  # noqa: E402


def test_symmetric_kl_gaussian():
    assert sim.symmetric_kl_gaussian(0.0, 1.0, 0.0, 1.0) == pytest.approx(0.0)
    assert sim.symmetric_kl_gaussian(1.0, 1.0, 0.0, 1.0) == pytest.approx(0.5)  # (1/4) * 1 * 2
    assert sim.symmetric_kl_gaussian(0.0, 4.0, 0.0, 1.0) == pytest.approx(0.25 * (4 + 0.25 - 2))


def test_profile_signal_and_summary():
    # Depth keeps paying off: high; the last stage adds nothing: PROFILE_BASE; an earlier layer wins: lower.
    rising = sim.profile_signal({"stage1": 0.5, "stage2": 0.7, "stage3": 0.9}, chance=0.5)
    flat = sim.profile_signal({"stage1": 0.5, "stage2": 0.8, "stage3": 0.8}, chance=0.5)
    worse = sim.profile_signal({"stage1": 0.5, "stage2": 0.9, "stage3": 0.7}, chance=0.5)
    assert flat == pytest.approx(sim.PROFILE_BASE)
    assert rising > flat > worse >= 0
    assert sim.profile_signal({"pool": 0.9}, chance=0.5) is None
    assert sim.summary_score({"bn": 1.0, "source": None, "profile": 0.0}) == pytest.approx(
        sim.SIGNAL_WEIGHTS["bn"] / (sim.SIGNAL_WEIGHTS["bn"] + sim.SIGNAL_WEIGHTS["profile"])
    )
    assert np.isnan(sim.summary_score({"bn": None}))


def test_distinct_layers_merges_identical_features():
    a = np.random.default_rng(0).normal(size=(10, 4))
    feats = {"stage1": a * 2, "stage2": a, "pool": a.copy()}
    assert sim.distinct_layers(feats, ["stage1", "stage2", "pool"]) == ["stage1", "stage2"]


@pytest.fixture(scope="module")
def tiny_backbone(tiny_card):
    from transferkit.backbones import load_backbone

    return load_backbone(tiny_card)


def _calibrate_bn(backbone, images):
    """Set every BN layer's running statistics to those of ``images`` (one cumulative pass)."""
    import torch

    model = backbone.model
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(backbone.normalize(torch.from_numpy(images)))
    model.eval()


def test_bn_divergence_is_zero_on_the_source_images_and_grows_off_them(tiny_card):
    from transferkit.backbones import load_backbone

    backbone = load_backbone(tiny_card)
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, size=(48, 3, 32, 32), dtype=np.uint8)
    _calibrate_bn(backbone, source)
    records, probs, per_image = sim.run_target_images(backbone, source, device="cpu", precision="fp32")
    assert probs is None and per_image > 0  # no source head on this card
    divs = [r["divergence"] for r in records]
    # ~0 everywhere (up to the unbiased-variance factor of the running statistics on 1x1 maps).
    assert divs and np.median(divs) < 0.01 and max(divs) < 0.1
    assert {r["group"] for r in records} >= {"stem", "stage1"}
    # Dark, low-contrast images: far from the "source" statistics.
    other = (rng.integers(0, 40, size=(48, 3, 32, 32))).astype(np.uint8)
    records2, _, _ = sim.run_target_images(backbone, other, device="cpu")
    assert np.mean([r["divergence"] for r in records2]) > 0.5
    groups = [g for g, _ in backbone.param_groups()]
    div = sim.bn_group_divergence(records2, groups)
    assert list(div) == [g for g in groups if g in div]


class _NoBNBackbone:
    """A network without BatchNorm (like AlexNet) behind the Backbone interface."""

    def __init__(self):
        import torch

        self.name = "nobn"
        self.has_source_head = False
        self.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
        self.cut_points = [type("CP", (), {"name": "pool"})()]

    def forward_layers(self, x, layers):
        return {"pool": self.model(x.float()).mean(dim=(2, 3))}

    def param_groups(self):
        return [("stem", list(self.model.parameters()))]


def test_similarity_without_batchnorm_says_so():
    rng = np.random.default_rng(0)
    feats = {"pool": rng.normal(size=(40, 8)).astype(np.float32)}
    y = np.repeat([0, 1], 20)
    images = rng.integers(0, 256, size=(8, 3, 16, 16), dtype=np.uint8)
    s = sim.measure_similarity(_NoBNBackbone(), features=feats, labels=y, images=images, image_labels=y[:8])
    assert s.signals["bn"] is None and s.signals["source"] is None
    assert any("no BatchNorm" in n for n in s.notes)
    assert any("no source classifier" in n for n in s.notes)
    d = s.to_dict()
    assert d["definition"] and d["signals"]["bn"] is None


# ----------------------------------------------------------------------------------- size


def test_size_counts_and_learning_curve():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 20)
    s = size_mod.count_sizes(labels, ["a", "b", "c"], n_total=100)
    assert (s.n_train, s.min_per_class, s.median_per_class, s.max_per_class) == (60, 10, 20.0, 30)
    assert s.imbalance == 3.0 and s.per_class == {"a": 30, "b": 10, "c": 20}
    # A hard problem keeps improving with data; a trivial one is flat.
    hard_x, hard_y = _blobs(n=400, d=200, c=4, sep=0.2, seed=3)
    easy_x, easy_y = _blobs(n=400, d=200, c=4, sep=5.0, seed=3)
    hard = size_mod.measure_size(hard_y, list("abcd"), 400, features=hard_x, layer="pool")
    easy = size_mod.measure_size(easy_y, list("abcd"), 400, features=easy_x, layer="pool")
    assert [p.fraction for p in hard.learning_curve] == list(size_mod.FRACTIONS)
    assert hard.slope_per_doubling > easy.slope_per_doubling
    assert hard.more_data_helps and "per doubling" in hard.sentence()
    assert abs(easy.slope_per_doubling) < 0.01 and "flat" in easy.sentence()
    assert size_mod.SizeProfile.to_dict(easy)["more_data_helps"] is False


# ---------------------------------------------------------------------------------- decide


def _fake_similarity(score, profile, bn_by_stage=None):
    layers = [sim.LayerSimilarity(layer=k, probe_acc=v) for k, v in profile.items()]
    for g, v in (bn_by_stage or {}).items():
        entry = next((x for x in layers if x.layer == g), None)
        if entry is None:
            entry = sim.LayerSimilarity(layer=g)
            layers.append(entry)
        entry.bn_similarity = v
    finite = {k: v for k, v in profile.items()}
    return sim.Similarity(score=score, signals={"bn": score, "source": None, "profile": None}, layers=layers,
                          best_layer=max(finite, key=finite.get), last_layer=list(profile)[-1], chance=0.5)


def _fake_size(per_class, n_classes=2, slope=0.0):
    y = np.repeat(np.arange(n_classes), per_class)
    s = size_mod.count_sizes(y, [str(i) for i in range(n_classes)], n_total=len(y))
    s.slope_per_doubling = slope
    return s


STAGES = ["stage1", "stage2", "stage3", "stage4"]
RISING = {"stem": 0.55, "stage1": 0.6, "stage2": 0.7, "stage3": 0.8, "stage4": 0.88, "pool": 0.9}
EARLY = {"stem": 0.55, "stage1": 0.6, "stage2": 0.8, "stage3": 0.86, "stage4": 0.8, "pool": 0.78}


def test_decide_small_data():
    plan = plan_mod.decide(_fake_size(50), _fake_similarity(0.8, RISING), stages=STAGES)
    assert plan["strategy"] == "linear" and plan["layer"] == "pool"
    plan = plan_mod.decide(_fake_size(50), _fake_similarity(0.8, EARLY), stages=STAGES)
    assert plan["strategy"] == "intermediate" and plan["layer"] == "stage3"
    assert any("stage3 (86.0%) beats the last layer pool (78.0%)" in r for r in plan["reasons"])
    plan = plan_mod.decide(_fake_size(50), _fake_similarity(0.8, RISING), stages=STAGES,
                           knn_last=0.95, probe_last=0.9)
    assert plan["strategy"] == "hidden" and plan["hidden"] == strategy_defaults("hidden")["hidden"]
    assert plan["params"] == {}  # the head's widths and schedule are the strategy's own defaults
    assert plan_mod.table_answer(_fake_size(50), _fake_similarity(0.8, RISING)) == (
        "small & similar -> linear", "linear")
    assert plan_mod.table_answer(_fake_size(50), _fake_similarity(0.3, RISING))[1] == "intermediate"
    # Small and different, no earlier layer clearly ahead: the table's intermediate, cut left to CV.
    plan = plan_mod.decide(_fake_size(50), _fake_similarity(0.3, RISING), stages=STAGES)
    assert plan["strategy"] == "intermediate" and plan["layer"] is None
    assert any("chosen by cross-validated probe accuracy" in r for r in plan["reasons"])
    # ... but an earlier layer that wins clearly is named directly.
    plan = plan_mod.decide(_fake_size(50), _fake_similarity(0.3, EARLY), stages=STAGES)
    assert plan["strategy"] == "intermediate" and plan["layer"] == "stage3"


def test_decide_large_data():
    bn = {"stem": 0.95, "stage1": 0.9, "stage2": 0.8, "stage3": 0.6, "stage4": 0.5}
    plan = plan_mod.decide(_fake_size(600), _fake_similarity(0.8, RISING, bn), stages=STAGES)
    assert plan["strategy"] == "partial" and plan["frozen_stages"] == 2
    assert plan["body_lr_ratio"] == strategy_defaults("partial")["body_lr_ratio"] and plan["epochs"] >= 5
    assert plan["params"] == {"freeze_stages": 2, "epochs": plan["epochs"]}
    steep = plan_mod.decide(_fake_size(600, slope=0.05), _fake_similarity(0.8, RISING, bn), stages=STAGES)
    assert steep["frozen_stages"] == 1 and any("per doubling" in r for r in steep["reasons"])
    plan = plan_mod.decide(_fake_size(600), _fake_similarity(0.3, RISING, bn), stages=STAGES)
    assert plan["strategy"] == "full" and plan["body_lr_ratio"] == strategy_defaults("full")["body_lr_ratio"]
    plan = plan_mod.decide(_fake_size(2000), _fake_similarity(0.1, RISING), stages=STAGES)
    assert plan["strategy"] == "scratch"
    assert plan_mod.table_answer(_fake_size(600), _fake_similarity(0.8, RISING))[1] == "partial"
    assert plan_mod.table_answer(_fake_size(600), _fake_similarity(0.3, RISING))[1] == "full"
    plan = plan_mod.decide(_fake_size(2000), _fake_similarity(0.1, RISING), stages=STAGES)
    assert plan["lr"] == strategy_defaults("scratch")["lr"]  # one source of defaults: the strategy's


def test_advisor_settings_are_checked_against_the_strategy():
    from transferkit.advisor.rules import plan_of
    from transferkit.errors import ConfigError

    assert plan_of("linear", {"layer": "stage3", "epochs": None}, [])["params"] == {"layer": "stage3"}
    with pytest.raises(ConfigError, match=r"\['freeze_stages'\] for strategy 'linear'"):
        plan_of("linear", {"freeze_stages": 2}, [])


# ------------------------------------------------------------------- advise / rank end to end


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from conftest import make_image_folder

    from transferkit.data import load_dataset

    root = make_image_folder(tmp_path_factory.mktemp("advise"), per_class=16, size=20, seed=4)
    return load_dataset(root, test_fraction=0.25)


def test_advise_end_to_end(tiny_dataset, tiny_backbone, tmp_path):
    import json

    from transferkit.advisor import advise

    advice = advise(tiny_dataset, tiny_backbone, store_dir=tmp_path / "store", device="cpu", progress=False)
    d = advice.to_dict()
    for key in ("strategy", "layer", "frozen_stages", "similarity", "size", "table_rule", "reasons"):
        assert key in d
    json.dumps(d, allow_nan=False)  # strictly JSON
    assert d["strategy"] in strategy_names()
    if d["strategy"] in ("linear", "intermediate", "hidden"):  # the plan always names its cut
        assert d["layer"] in [cp.name for cp in tiny_backbone.cut_points]
    n_train = int((np.asarray(tiny_dataset.splits) == "train").sum())
    assert d["size"]["n_train"] == n_train < len(tiny_dataset)
    assert 0.0 <= d["similarity"]["score"] <= 1.0
    assert d["similarity"]["signals"]["bn"] is not None
    assert [x["layer"] for x in d["similarity"]["layers"] if x["probe_acc"] is not None] == [
        cp.name for cp in tiny_backbone.cut_points]
    assert len(advice.reasons) >= 3 and any(ch.isdigit() for ch in advice.reasons[0])
    assert advice.summary_lines()[0].startswith("Advice: ")
    # the total covers its parts (a part timed outside the total, or a missing one, fails)
    assert 0 < d["cost"]["features_seconds"] + d["cost"]["similarity_seconds"] <= d["cost_seconds"]
    # A second run reads the feature store.
    again = advise(tiny_dataset, tiny_backbone, store_dir=tmp_path / "store", device="cpu", progress=False)
    assert again.cost["features_from_cache"] and again.strategy == advice.strategy


def test_advise_small_different_names_the_cv_cut(tiny_dataset, tiny_backbone, tmp_path, monkeypatch):
    from transferkit.advisor import advise

    # Force the "small & different, no clear earlier winner, no kNN gain" branch.
    monkeypatch.setattr(sim, "SIMILAR_THRESHOLD", 1.01)
    monkeypatch.setattr(rules_mod, "INTERMEDIATE_MARGIN", 1.0)
    monkeypatch.setattr(rules_mod, "HIDDEN_MARGIN", 1.0)
    advice = advise(tiny_dataset, tiny_backbone, store_dir=tmp_path / "store", device="cpu", progress=False)
    assert advice.strategy == "intermediate" and advice.table_strategy == "intermediate"
    cuts = [cp.name for cp in tiny_backbone.cut_points if cp.name != "stem"]
    assert advice.layer in cuts and advice.strategy_params() == {"layer": advice.layer}
    line = next(r for r in advice.reasons if r.startswith("Cross-validated probe accuracy per cut point"))
    assert all(c in line for c in cuts) and line.endswith(f"cut at {advice.layer}.")
    assert 0 < advice.cost["cut_cv_seconds"] <= advice.cost_seconds


def test_rank_backbones(tiny_dataset, tiny_backbone, tmp_path):
    from transferkit.advisor import rank_backbones
    from transferkit.backbones import load_backbone

    other = load_backbone(tiny_backbone.spec, pretrained=False)
    rows = rank_backbones(tiny_dataset, [tiny_backbone, other], store_dir=tmp_path / "store", device="cpu",
                          progress=False)
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["rank_score"] >= rows[1]["rank_score"]
    for r in rows:
        assert {"spec", "logme", "knn_acc", "probe_acc", "rank_score", "seconds"} <= set(r)
    with pytest.raises(ConfigError):
        rank_backbones(tiny_dataset, [], store_dir=tmp_path / "store")


def test_similarity_of_subset_one_pass(tiny_dataset, tiny_backbone):
    s = sim.similarity_of_subset(tiny_dataset, tiny_backbone, n_images=24, device="cpu")
    assert s.n_images == 24 and s.signals["bn"] is not None and s.signals["source"] is None
    assert set(s.probe_profile()) == {cp.name for cp in tiny_backbone.cut_points}
    assert s.forward_seconds_per_image > 0
