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
        "--size-strategies", "linear", "--cache-dir", str(tmp_path / "cache"), "--quiet", "--json",
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
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "scratch" in html
    assert (out / "compare.log").read_text().count("strategy") >= 3


@pytest.mark.slow
def test_demo_runs_the_develop_model_study(tmp_path):
    from transferkit.demo import run_demo

    head = run_demo(tmp_path / "demo", epochs=2, pretrain_epochs=2, sizes=(5,), progress=False)
    # two pretraining epochs: well above the 0.2 of chance on five classes, not yet converged
    assert head["source"]["task"] == "digits 0-4" and head["source"]["val_accuracy"] > 0.3
    assert set(head["accuracy"]) == {"linear", "intermediate", "partial", "full", "scratch"}
    assert (tmp_path / "demo" / "compare" / "report.html").is_file()
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["best_strategy"] == head["best_strategy"]
