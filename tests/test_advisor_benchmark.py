"""benchmarks/advisor.py without running the sweep: the per-image held-out record and the paired test
that says whether ``auto``'s regret (or a fine-tune's distance below ``linear``) is measurable."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "advisor.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("advisor_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["advisor_bench"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def digits():
    from transferkit.data import load_dataset

    return load_dataset("digits", progress=False)


def test_the_held_out_record_round_trips(sweep):
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 539):
        correct = rng.random(n) < 0.7
        assert np.array_equal(sweep.unpack(sweep.pack(correct)), correct)
    assert sweep.unpack(None) is None


def test_a_regret_is_measurable_only_beyond_its_noise(sweep, digits):
    idx = sweep.scored_idx(digits)
    n = len(idx)
    best = np.ones(n, bool)
    best[::10] = False  # 90%
    close, far = best.copy(), best.copy()
    close[1:3] = False  # 2 images fewer: within noise
    far[1:60:2] = False  # 30 images fewer
    for auto, measurable in ((close, False), (far, True)):
        test = sweep.paired(digits, {"held_out_correct": sweep.pack(best)}, {"held_out_correct": sweep.pack(auto)})
        assert test["diff"] == pytest.approx((best.sum() - auto.sum()) / n, abs=1e-4)
        assert (test["decision"] == "a_better") is measurable and test["low"] <= test["diff"] <= test["high"]
    assert sweep.paired(digits, {"held_out_correct": sweep.pack(best)}, {}) is None  # an older result


def test_the_half_split_reference_separates_clear_winners_from_noise(sweep):
    rng = np.random.default_rng(0)
    n = 400
    strong, weak = rng.random(n) < 0.95, rng.random(n) < 0.60
    packed = {"strong": {"held_out_correct": sweep.pack(strong)}, "weak": {"held_out_correct": sweep.pack(weak)}}
    clear = sweep.half_split_reference(packed, {"held_out_correct": sweep.pack(weak)}, draws=200)
    assert clear["best_on_half"] == 1.0 and clear["auto"] == 0.0  # a 35-point gap: never confused
    # Two strategies of the same true accuracy: which one looks best on a half is a coin toss,
    # and on 200 images a coin toss is often more than a point away.
    twins = {k: {"held_out_correct": sweep.pack(rng.random(n) < 0.8)} for k in ("a", "b")}
    tie = sweep.half_split_reference(twins, twins["a"], draws=200)
    assert 0.2 < tie["best_on_half"] < 1.0 and 0.2 < tie["auto"] < 1.0
    assert sweep.half_split_reference(packed, {}) is None  # a result stored before the per-image record
