"""Report layer: benefit numbers, crossover, figures and the self-contained report.html (fast)."""

from __future__ import annotations

import base64
import io
import json
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from transferkit.errors import ConfigError
from transferkit.report import crossover, curve_numbers, headline, plots, transfer_benefit, write_report
from transferkit.report.example import example_misclassified, example_repeated_result, example_result

PNG = b"\x89PNG\r\n\x1a\n"


def hist(accs, key="monitor_acc", **extra):
    return [{"epoch": i, "train_loss": 1.0 / i, key: a, **extra} for i, a in enumerate(accs, start=1)]


HISTORIES = {
    "scratch": hist([0.2, 0.4, 0.5, 0.6]),
    "partial": hist([0.7, 0.8, 0.9, 0.85]),
    "full": hist([0.3, 0.4, 0.5, 0.55]),
    "linear": [{"epoch": 1, "monitor_acc": 0.65}],
}


# ------------------------------------------------------------------ benefit


def test_benefit_numbers_are_exact():
    b = transfer_benefit(HISTORIES)
    s, p = b["strategies"]["scratch"], b["strategies"]["partial"]
    assert s["start"] == pytest.approx(0.2)
    assert s["slope"] == pytest.approx((0.5 - 0.2) / 2)  # first 3 epochs: (acc[3] - acc[1]) / 2
    assert s["auc"] == pytest.approx((0.3 + 0.45 + 0.55) / 3)
    assert s["asymptote"] == pytest.approx(0.6)
    assert s["delta"] is None and not s["negative_transfer"]
    assert p["start"] == pytest.approx(0.7)
    assert p["slope"] == pytest.approx(0.1)
    assert p["auc"] == pytest.approx((0.75 + 0.85 + 0.875) / 3)
    assert p["asymptote"] == pytest.approx(0.9) and p["best_epoch"] == 3 and p["epochs"] == 4
    assert p["delta"]["start"] == pytest.approx(0.5)
    assert p["delta"]["slope"] == pytest.approx(0.1 - 0.15)
    assert p["delta"]["asymptote"] == pytest.approx(0.3)
    assert p["summary"].startswith("partial: +50.0 points at start, -5.0 points/epoch slope")
    assert "+30.0 points at the asymptote vs scratch" in p["summary"]
    assert b["has_baseline"] and b["metric"] == "monitor_acc" and set(b["definitions"]) >= {"start", "slope"}


def test_negative_transfer_is_flagged_only_when_the_paired_test_says_so():
    worse = {"full": {"decision": "b_better", "text": "scratch is better than full: -5.0 points"}}
    b = transfer_benefit(HISTORIES, verdicts=worse)
    full = b["strategies"]["full"]
    assert full["negative_transfer"] and b["negative_transfer"] == ["full"]
    assert full["summary"].startswith("NEGATIVE TRANSFER: full ends 5.0 points below scratch")
    assert not b["strategies"]["partial"]["negative_transfer"]
    # a tolerance of 6 points forgives it
    assert transfer_benefit(HISTORIES, tolerance=0.06, verdicts=worse)["negative_transfer"] == []
    # the same curves without a test, or with a test that finds no difference: described, never flagged
    for verdicts in (None, {"full": {"decision": "no_measurable_difference", "text": "no measurable difference"}}):
        b = transfer_benefit(HISTORIES, verdicts=verdicts)
        assert b["negative_transfer"] == [] and "NEGATIVE" not in b["strategies"]["full"]["summary"]
        assert b["strategies"]["full"]["summary"].startswith("full ends 5.0 points below scratch")


def test_single_fit_probe_has_start_equal_asymptote_and_no_slope():
    lin = transfer_benefit(HISTORIES)["strategies"]["linear"]
    assert lin["single_fit"] and lin["start"] == lin["asymptote"] == lin["auc"] == 0.65
    assert lin["slope"] == 0.0 and lin["delta"]["slope"] is None
    assert lin["delta"]["start"] == pytest.approx(0.45)
    assert "fitted in one go" in lin["summary"]


def test_benefit_orders_epochs_skips_missing_and_falls_back_to_val_acc():
    shuffled = list(reversed(hist([0.1, 0.3, 0.6])))
    nan_row = [{"epoch": 4, "monitor_acc": float("nan")}, {"epoch": 5, "monitor_acc": None}]
    b = transfer_benefit(
        {
            "scratch": shuffled + nan_row,
            "partial": hist([0.5, 0.7], key="val_acc", monitor_acc=None),
            "broken": [{"epoch": 1, "train_loss": 1.0}],
        }
    )
    s = b["strategies"]["scratch"]
    assert (s["start"], s["asymptote"], s["epochs"]) == (0.1, 0.6, 3)
    assert s["slope"] == pytest.approx(0.25)
    assert b["strategies"]["partial"]["metric"] == "val_acc"
    assert "broken" in b["skipped"] and "broken" not in b["strategies"]


def test_benefit_without_baseline_and_bad_arguments():
    b = transfer_benefit({"partial": hist([0.5, 0.6])})
    assert not b["has_baseline"] and b["strategies"]["partial"]["delta"] is None
    assert "no scratch run to compare with" in b["strategies"]["partial"]["summary"]
    with pytest.raises(ConfigError, match="first_epochs"):
        transfer_benefit(HISTORIES, first_epochs=1)
    with pytest.raises(ConfigError):
        curve_numbers([])
    assert curve_numbers([0.1, 0.5], first_epochs=10)["slope"] == pytest.approx(0.4)


# ------------------------------------------------------------------ crossover


def test_crossover_interpolates_on_log_scale():
    probe = {5: 0.6, 10: 0.7, 25: 0.8, 50: 0.85}
    fine = {5: 0.5, 10: 0.6, 25: 0.85, 50: 0.9}
    # d(10) = -0.1, d(25) = +0.05 -> log n* = log 10 + 2/3 (log 25 - log 10) -> 18.4
    assert crossover(probe, fine) == round(10 * 2.5 ** (2 / 3)) == 18
    # JSON round trip turns keys into strings; "all" and unknown keys are ignored
    assert (
        crossover({str(k): v for k, v in probe.items()} | {"all": 0.9}, {str(k): v for k, v in fine.items()})
        == 18
    )


def test_crossover_edge_cases():
    assert crossover({5: 0.5, 10: 0.6}, {5: 0.4, 10: 0.5}) is None  # never overtakes
    assert crossover({5: 0.5, 10: 0.6}, {5: 0.55, 10: 0.7}) == 5  # ahead everywhere measured
    assert crossover({}, {5: 0.5}) is None
    # d = -0.4, +0.01: t = 0.4 / 0.41 -> 5 * 10 ** 0.9756 = 47.3
    assert crossover({5: 0.5, 50: 0.7}, {5: 0.1, 50: 0.71}) == 47
    assert crossover({5: 0.5, 10: 0.6, 20: 0.7}, {5: 0.5, 10: 0.5, 20: 0.75}) in range(11, 21)


# ------------------------------------------------------------------ plots


def _is_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 2000
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100
    return True


def test_each_plot_writes_a_png(tmp_path):
    r = example_result()
    sim = r["advisor"]["similarity"]
    best = r["strategies"]["partial"]["metrics"]
    mis = example_misclassified(n=7)
    paths = [
        plots.plot_learning_curves({n: s["history"] for n, s in r["strategies"].items()}, tmp_path / "a.png"),
        plots.plot_data_size(r["data_size"], tmp_path / "b.png"),
        plots.plot_layer_profile(sim["per_layer"], tmp_path / "c.png"),
        plots.plot_similarity(sim["signals"], tmp_path / "d.png"),
        plots.plot_confusion(best["confusion_matrix"], r["data"]["classes"], tmp_path / "e.png"),
        plots.plot_misclassified(
            mis["images"], mis["true"], mis["pred"], tmp_path / "f.png", classes=r["data"]["classes"]
        ),
        plots.plot_benefit(r["benefit"], tmp_path / "g.png"),
    ]
    assert all(_is_png(p) for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{c}.png" for c in "abcdefg"]  # no temp files left


def test_plots_accept_other_layouts(tmp_path):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (30, 16, 16), dtype=np.uint8)  # more than 24: only 24 drawn
    assert _is_png(plots.plot_misclassified(hwc, ["a", "b", "c"], ["b", "c", "a"], tmp_path / "hwc.png"))
    assert _is_png(plots.plot_misclassified(gray, list(range(30)), list(range(1, 31)), tmp_path / "g.png"))
    big = rng.integers(0, 9, (30, 30))  # 30 classes: no counts written, labels still fit
    assert _is_png(plots.plot_confusion(big, [f"class {i}" for i in range(30)], tmp_path / "cm.png"))
    layers = {"stem": {"probe_acc": 0.3}, "stage1": {"bn_similarity": 0.9}, "pool": {"probe_acc": None}}
    assert _is_png(plots.plot_layer_profile(layers, tmp_path / "layers.png"))
    with pytest.raises(ConfigError, match="square"):
        plots.plot_confusion([[1, 2, 3]], None, tmp_path / "bad.png")
    with pytest.raises(ConfigError, match="baseline"):
        plots.plot_benefit(transfer_benefit({"partial": hist([0.5, 0.6])}), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_strategy_colours_and_roles_follow_the_registry():
    from transferkit.report.roles import BASELINE, finetune_strategies, pick_pair, probe_strategies
    from transferkit.strategies import strategy_names

    names = strategy_names()
    assert list(plots.STRATEGY_COLORS) == names  # a registered strategy always has a colour
    assert len(set(plots.STRATEGY_COLORS.values())) == len(names)
    assert plots.strategy_color("not-registered", ["not-registered"]) not in plots.STRATEGY_COLORS.values()
    probes, fines = probe_strategies(), finetune_strategies()
    assert BASELINE in names and BASELINE not in probes + fines
    assert sorted((*probes, *fines, BASELINE)) == sorted(names)
    assert [n for n in names if n in probes + fines] == [*probes, *fines]  # registry order
    assert pick_pair({"full": {}, "linear": {}, "hidden": {}}) == ("linear", "full")


# ------------------------------------------------------------------ report.html


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = write_report(example_result(), out, misclassified_images=example_misclassified())
    return path, path.read_text(encoding="utf-8")


def _data_uris(page):
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_full_report_has_every_figure_embedded(full_report):
    path, page = full_report
    names = {
        "learning_curves",
        "benefit",
        "data_size",
        "layer_profile",
        "similarity",
        "confusion",
        "misclassified",
    }
    assert {p.stem for p in (path.parent / "plots").glob("*.png")} == names
    uris = _data_uris(page)
    assert len(uris) == len(names) == page.count("<img ")
    for uri in uris:
        with Image.open(io.BytesIO(base64.b64decode(uri))) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def test_full_report_is_self_contained(full_report):
    _, page = full_report
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.I)
    assert "<script" not in page.lower()
    assert "@import" not in page and "url(" not in page
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page


def test_full_report_escapes_user_strings(full_report):
    _, page = full_report
    assert "<b>bird" not in page and "<demo>" not in page
    assert "&lt;b&gt;bird &amp; co&lt;/b&gt;" in page
    assert "transferkit report — pets &lt;demo&gt;" in page
    assert "/data/pets &amp; friends" in page


def test_full_report_content(full_report):
    _, page = full_report
    # no per-image predictions recorded: one untested draw, nothing claimed, nothing red
    assert "Highest: partial 0.95 on test (152 images) vs scratch 0.66 (+29 points; one draw, untested)" in page
    assert "full ends 3.0 points below scratch on its learning curve, untested" in page
    assert "NEGATIVE TRANSFER" not in page and "callout neg" not in page and "re-run" in page.lower()
    assert "The advisor recommends <strong>partial</strong>, cut at <code>pool</code>" in page
    assert "partial overtakes linear at about 30 training images per class" in page
    for text in (
        "Definitions",
        "balanced accuracy",
        "macro F1",
        "Per class — partial",
        "precision",
        "3f1c2a9e",
        "a1b2c3d4e5f60718",
        "stratified-dedup seed=0 test=0.25",
        "timm",
        "sklearn",
        "transferkit run",
        "2025-01-01T12:00:00+00:00",
        "Provenance",
        "Data-size numbers",
    ):
        assert text in page, text
    # "all" is placed at the largest per-class count (120)
    assert '<td class="num">120</td>' in page


def test_minimal_and_partial_results(tmp_path):
    page = write_report({}, tmp_path / "empty").read_text()
    assert "holds no metrics" in page and "<img" not in page
    small = {"strategies": {"linear": {"metrics": {"accuracy": 0.5}}}, "seed": 3}
    page = write_report(small, tmp_path / "small").read_text()
    assert "Highest: linear 0.50 (no scratch baseline was run)" in page and "<img" not in page
    assert not (tmp_path / "small" / "plots").exists() or not any((tmp_path / "small" / "plots").iterdir())


def test_report_survives_json_round_trip_and_advisor_dataclass_form(tmp_path):
    r = json.loads(json.dumps(example_result()))
    sim = r["advisor"]["similarity"]
    # the advisor's Similarity.to_dict() form: a list of layers, a score, no summary
    r["advisor"]["similarity"] = {
        "score": 0.7,
        "similar": True,
        "signals": {"bn": 0.8, "profile": None, "source": 0.6},
        "layers": [{"layer": k, **v} for k, v in sim["per_layer"].items()],
        "definition": "score = weighted mean",
        "notes": ["no source head: source signal skipped"],
    }
    del r["benefit"]  # recomputed from the histories
    page = write_report(r, tmp_path).read_text()
    assert {p.stem for p in (tmp_path / "plots").glob("*.png")} >= {"layer_profile", "similarity", "benefit"}
    assert "score 0.70 of 1 (similar to the source data)" in page
    assert "no source head: source signal skipped" in page
    assert "NEGATIVE TRANSFER" not in page  # untested: a result without per-image predictions flags nothing


def test_malformed_section_is_named_not_fatal(tmp_path):
    r = example_result()
    r["strategies"]["partial"]["metrics"]["confusion_matrix"] = [[1, 2, 3]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = write_report(r, tmp_path).read_text()
    assert any("confusion" in str(w.message) for w in caught)
    assert "Not drawn: Confusion matrix (partial)" in page
    with pytest.raises(ConfigError):
        write_report([], tmp_path)


def test_headline_variants():
    base = {"strategies": {"scratch": {"metrics": {"accuracy": 0.7}}, "full": {"metrics": {"accuracy": 0.6}}}}
    assert headline(base) == (
        "Highest: scratch 0.70; the best pretrained strategy, full, scored 0.60 (-10 points; one draw, untested)"
    )
    assert headline({}) is None
    named = {**base, "best_strategy": "full", "split": {"scored": "val", "n_scored": 20}}
    assert headline(named) == "Highest: full 0.60 on val (20 images) vs scratch 0.70 (-10 points; one draw, untested)"


def test_report_with_draws_states_intervals_and_only_tested_differences(tmp_path):
    page = write_report(example_repeated_result(), tmp_path).read_text()
    # partial's 28-point lead over scratch on 152 images is real: said, in green, with its interval
    assert "Best: partial 0.947 [0.9" in page and "measurably ahead of every other strategy" in page
    assert "transfer helped: partial beats scratch" in page
    # full's 3 points below scratch are within noise: described, not flagged, not red
    assert "NEGATIVE TRANSFER" not in page and "callout neg" not in page
    assert re.search(r'<td class="num">-\d\.\d \[-\d+\.\d, \+\d+\.\d\] no measurable difference</td>', page)
    assert re.search(r'<td class="num pos">\+2\d\.\d \[\+\d+\.\d, \+\d+\.\d\] better</td>', page)
    # the plain paragraph, the data-size story and the table of start / slope / asymptote with intervals
    assert '<p class="plain">We trained 4 ways' in page and "3 times with a different training draw" in page
    assert "With 5 training images per class, linear beats scratch by +" in page
    assert "scratch has not caught up even with all training images" in page
    assert "What transfer buys, by amount of data" in page and "per doubling" in page
    assert "mean of 3 draws" in page and "Mean of 3 draws; 95% intervals: bootstrap over 3 draws" in page
    # the learning curves' start / slope / asymptote against scratch, paired draw by draw
    assert "Over 3 draws (paired with scratch" in page
    assert re.search(r"<td>partial</td><td class=\"num\">\+(49|50|51)\.\d \[\+4\d\.\d, \+5\d\.\d\]</td>", page)
