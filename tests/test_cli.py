"""The command line, end to end through typer's CliRunner, on tiny data and a tiny backbone."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from transferkit.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "cache"


def test_fit_json_then_evaluate_predict_export(tiny_card, tiny_folder, cache, tmp_path):
    run = tmp_path / "run"
    result = invoke("fit", tiny_folder, "--backbone", tiny_card, "--strategy", "linear", "--out", run,
                    "--cache-dir", cache, "--quiet", "--json")
    assert result.exit_code == 0, result.output
    fit = json.loads(result.stdout)
    assert fit["strategy"] == "linear" and fit["run_dir"] == str(run)
    assert fit["split"]["scored"] == {"name": "val", "n": 18}
    assert {"accuracy", "balanced_accuracy"} <= set(fit["metrics"])

    result = invoke("evaluate", run, tiny_folder, "--cache-dir", cache, "--json")
    assert result.exit_code == 0, result.output
    ev = json.loads(result.stdout)
    assert ev["metrics"]["accuracy"] == pytest.approx(fit["metrics"]["accuracy"])
    assert ev["split"]["name"] == "val" and len(ev["metrics"]["confusion_matrix"]) == 3

    result = invoke("predict", run, tiny_folder / "val" / "red", "--top-k", "2", "--json")
    assert result.exit_code == 0, result.output
    preds = json.loads(result.stdout)["predictions"]
    assert len(preds) == 6 and all(len(p["top"]) == 2 for p in preds)

    result = invoke("export", run, "--format", "onnx", "--out", tmp_path / "m.onnx", "--json")
    assert result.exit_code == 0, result.output
    exported = json.loads(result.stdout)
    assert exported["path"] == str(tmp_path / "m.onnx") and (tmp_path / "m.onnx").stat().st_size > 0
    assert exported["format"] == "onnx"


def test_extract_twice_reads_the_store(tiny_card, tiny_folder, cache, tmp_path):
    args = ("extract", tiny_folder, "--backbone", tiny_card, "--layers", "stage2,pool", "--cache-dir", cache,
            "--quiet", "--json")
    first = json.loads(invoke(*args, "--out", tmp_path / "f.h5").stdout)
    second = json.loads(invoke(*args).stdout)
    assert first["from_cache"] is False and second["from_cache"] is True
    assert first["layers"] == second["layers"] and first["layers"]["pool"][0] == 54
    assert (tmp_path / "f.h5").is_file()


def test_bad_strategy_is_one_line_and_exit_2(tiny_card, tiny_folder, tmp_path):
    result = runner.invoke(app, ["fit", str(tiny_folder), "--backbone", str(tiny_card), "--strategy", "linaer",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "Did you mean 'linear'" in result.output and "Traceback" not in result.output


def test_missing_data_names_the_path(tiny_card, tmp_path):
    result = runner.invoke(app, ["fit", str(tmp_path / "nope"), "--backbone", str(tiny_card),
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "nope" in result.output and "Traceback" not in result.output


def test_evaluate_on_a_folder_that_is_not_a_run(tiny_folder, tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path), str(tiny_folder)])
    assert result.exit_code == 2 and "not a finished transferkit run" in result.output


def test_backbones_lists_cards_and_torchvision(tiny_card):
    result = invoke("backbones", tiny_card.parent, "--json")
    assert result.exit_code == 0, result.output
    names = {row["name"] for row in json.loads(result.stdout)}
    assert {"alexnet", "googlenet", "resnet18"} <= names


def test_strategy_help_lists_the_registry():
    from transferkit.strategies import strategy_names

    result = runner.invoke(app, ["fit", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert ", ".join(strategy_names()) + " or auto." in result.output
