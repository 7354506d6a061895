"""compare and demo through the public API / CLI, on tiny data (the demo itself is marked slow)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.strategies import strategy_names


def test_compare_writes_result_report_and_benefit(tiny_card, tiny_folder, tmp_path):
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, [
        "compare", str(tiny_folder), "--backbone", str(tiny_card), "--out", str(out),
        "--strategies", "linear,partial,scratch", "--epochs", "2", "--sizes", "3",
        "--size-strategies", "linear,scratch", "--repeats", "2", "--cache-dir", str(tmp_path / "cache"), "--quiet",
        "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["strategies"]) == {"linear", "partial", "scratch"}
    full = json.loads((out / "result.json").read_text())
    # the summary reports the advisor's plan from result.json, a registered strategy, with its reasons
    advisor = full["advisor"]
    assert summary["advisor"] == {k: advisor.get(k) for k in ("strategy", "layer", "frozen_stages")}
    assert advisor["strategy"] in strategy_names() and advisor["reasons"]
    assert advisor["table_rule"].startswith("small &")  # 36 training images: small by the four-case table
    # every strategy scored on the same 18 held-out val images, scratch is the benefit baseline
    assert {s["metrics"]["n"] for s in full["strategies"].values()} == {18}
    assert full["benefit"]["baseline"] == "scratch" and "partial" in full["benefit"]["strategies"]
    assert len(full["strategies"]["partial"]["history"]) == 2
    assert set(full["data_size"]["linear"]) == {"3", "all"}
    # two draws: each with its own seed and run directory, its predictions on the 18 scored images,
    # the first draw's metrics with their Wilson interval, the mean with a two-way bootstrap interval
    assert full["repeats"] == 2 and len(full["scored_labels"]) == 18
    for name, s in full["strategies"].items():
        assert [d["seed"] for d in s["draws"]] == [0, 1] and all(len(d["pred"]) == 18 for d in s["draws"])
        lo, hi = s["metrics"]["accuracy_interval"]
        assert lo <= s["metrics"]["accuracy"] <= hi
        assert (out / "runs" / f"{name}-draw2" / "metrics.json").is_file()
        mean = summary["strategies"][name]["mean_accuracy"]
        assert mean["mean"] == pytest.approx(sum(d["accuracy"] for d in s["draws"]) / 2)
        assert mean["low"] <= mean["mean"] <= mean["high"] and "2 draws" in mean["method"]
    assert set(full["significance"]["vs_baseline"]) == {"linear", "partial"}
    assert summary["vs_baseline"]["linear"]["decision"] in {"a_better", "b_better", "no_measurable_difference"}
    assert [len(p) for p in full["data_size_draws"]["scratch"]["3"]] == [18, 18]
    assert set(full["data_size_evidence"]["benefit"]["linear"]) == {"start", "slope", "asymptote"}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "scratch" in html
    assert (out / "compare.log").read_text().count("strategy") >= 3


def test_compare_refuses_a_repeat_count_below_one(tiny_card, tiny_folder, tmp_path):
    result = CliRunner().invoke(app, ["compare", str(tiny_folder), "--backbone", str(tiny_card), "--out",
                                      str(tmp_path / "c"), "--repeats", "0", "--quiet"])
    assert result.exit_code == 2 and "--repeats must be a positive integer" in result.output


@pytest.mark.slow
def test_demo_runs_the_develop_model_study_and_repeats_itself(tmp_path):
    from transferkit.demo import run_demo

    def demo(where):
        return run_demo(tmp_path / where, epochs=2, pretrain_epochs=2, sizes=(3,), repeats=2, progress=False)

    head = demo("a")
    # two pretraining epochs: well above the 0.2 of chance on five classes, not yet converged
    assert head["source"]["task"] == "digits 0-4" and head["source"]["val_accuracy"] > 0.3
    from transferkit.strategies import strategy_names

    assert set(head["accuracy"]) == set(strategy_names(compared_by_default=True))  # compare's default sweep
    for acc in head["accuracy"].values():
        assert acc["low"] <= acc["mean"] <= acc["high"] and acc["high"] - acc["low"] > 0.01
    assert list(head["by_size"]) == ["3", "all"] and head["repeats"] == 2
    assert all(d["low"] <= d["diff"] <= d["high"] for d in head["by_size"].values())
    assert head["headline"] and head["best"]["strategy"] in head["best"]["top_group"]
    assert (tmp_path / "a" / "compare" / "report.html").is_file()
    assert json.loads((tmp_path / "a" / "demo.json").read_text())["headline"] == head["headline"]
    # the same seed from a clean directory and cache: the same headline numbers
    again = demo("b")
    for key in ("headline", "accuracy", "by_size", "best", "scratch_catches_up", "advisor"):
        assert again[key] == head[key], key
