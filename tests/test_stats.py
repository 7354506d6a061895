"""transferkit.stats: intervals and paired decisions, against hand-computed values (fast)."""

from __future__ import annotations

import numpy as np
import pytest

from transferkit import stats
from transferkit.errors import ConfigError
from transferkit.report.evidence import catches_up

# 269 held-out images, two classes: the size of the demo's scored set in issue 13
LABELS = np.array([0] * 135 + [1] * 134)


def test_wilson_interval_matches_the_textbook_values():
    # Wilson (1927) / Newcombe (1998) example: 81 of 263 -> [0.2553, 0.3662]
    lo, hi = stats.wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    # all right on 10 images is not certainty
    assert stats.wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    assert stats.wilson_interval(0, 10)[0] == 0.0
    with pytest.raises(ConfigError):
        stats.wilson_interval(11, 10)


def test_sign_test_is_mcnemars_exact_test():
    assert stats.sign_test(0, 0) == 1.0
    assert stats.sign_test(0, 1) == 1.0
    assert stats.sign_test(5, 0) == pytest.approx(2 / 32)  # 0.0625: five discordant images are not enough
    assert stats.sign_test(6, 0) == pytest.approx(2 / 64)
    assert stats.sign_test(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)


def test_one_image_difference_on_269_is_not_flagged():
    a = LABELS.copy()
    b = LABELS.copy()
    a[:2] = 1  # A gets 267 right
    b[:1] = 1  # B gets 268 right: one image apart (0.4 points)
    d = stats.paired_difference(LABELS, a, b)
    assert d["diff"] == pytest.approx(-1 / 269)
    assert d["decision"] == stats.NO_DIFFERENCE
    assert d["low"] < 0 <= d["high"] and d["p"] == 1.0 and (d["wins"], d["losses"]) == (0, 1)
    assert "no measurable difference" in stats.verdict("full", "scratch", d)


def test_large_consistent_difference_is_flagged_both_ways():
    rng = np.random.default_rng(1)
    a = LABELS.copy()
    b = LABELS.copy()
    b[rng.choice(len(LABELS), 40, replace=False)] ^= 1  # B wrong on 40 images A gets right
    d = stats.paired_difference(LABELS, a, b)
    assert d["decision"] == stats.A_BETTER and d["low"] > 0.1 and d["p"] < 1e-6
    assert stats.paired_difference(LABELS, b, a)["decision"] == stats.B_BETTER
    # the same gap over three draws with the losses spread differently in each draw
    draws_b = np.stack([np.where(rng.random(len(LABELS)) < 0.15, 1 - LABELS, LABELS) for _ in range(3)])
    d3 = stats.paired_difference(LABELS, np.stack([a] * 3), draws_b)
    assert d3["decision"] == stats.A_BETTER and d3["draws"] == 3 and "sign test" in d3["method"]


def test_a_few_discordant_images_need_the_exact_test_too():
    # 5 images, all in A's favour: the bootstrap interval excludes zero, the exact test (p = 0.0625) does not agree
    a = LABELS.copy()
    b = LABELS.copy()
    b[:5] = 1
    d = stats.paired_difference(LABELS, a, b)
    assert d["low"] > 0 and d["p"] == pytest.approx(0.0625) and d["decision"] == stats.NO_DIFFERENCE


def test_accuracy_summary_one_draw_and_several():
    pred = LABELS.copy()
    pred[:27] = 1  # 242 of 269 right
    one = stats.accuracy_summary(LABELS, pred)
    assert one["accuracy"]["mean"] == pytest.approx(242 / 269)
    assert (one["accuracy"]["low"], one["accuracy"]["high"]) == pytest.approx(stats.wilson_interval(242, 269))
    bal = one["balanced_accuracy"]
    assert bal["mean"] == pytest.approx((108 / 135 + 1) / 2) and bal["low"] < bal["mean"] < bal["high"]
    # the same predictions always give the same interval (fixed bootstrap seed)
    assert stats.accuracy_summary(LABELS, pred) == one
    # three draws that disagree: the interval holds the training noise too, so it is wider than one draw's
    spread = np.stack([pred, LABELS, np.where(np.arange(269) < 60, 1 - LABELS, LABELS)])
    three = stats.accuracy_summary(LABELS, spread)
    assert three["draws"] == 3 and three["per_draw"][1] == 1.0
    assert three["accuracy"]["high"] - three["accuracy"]["low"] > one["accuracy"]["high"] - one["accuracy"]["low"]
    # every draw perfect: still not certain on 269 images
    perfect = stats.accuracy_summary(LABELS, np.stack([LABELS, LABELS]))
    assert perfect["accuracy"]["low"] == pytest.approx(stats.wilson_interval(269, 269)[0])
    with pytest.raises(ConfigError):
        stats.accuracy_summary(LABELS, pred[:10])
    with pytest.raises(ConfigError):
        stats.paired_difference(LABELS, pred, np.stack([pred, pred]))


def test_mean_interval_needs_two_draws():
    assert np.isnan(stats.mean_interval([0.8])["low"])
    m = stats.mean_interval([0.8, 0.9, 1.0])
    assert m["mean"] == pytest.approx(0.9) and 0.8 <= m["low"] < 0.9 < m["high"] <= 1.0


def _d(diff: float, decision: str) -> dict:
    return {"diff": diff, "decision": decision}


def test_scratch_catches_up_after_the_last_size_where_transfer_is_measurably_ahead():
    win, tie = stats.A_BETTER, stats.NO_DIFFERENCE
    vs = {"linear": {"2": _d(0.4, win), "5": _d(0.3, win), "10": _d(0.02, tie), "all": _d(0.0, tie)},
          "partial": {"2": _d(0.1, tie), "5": _d(0.35, win), "10": _d(0.05, win), "all": _d(0.01, tie)}}
    up = catches_up(vs, "scratch")
    # at 10/class partial (the larger lead) is still measurably ahead; from "all" on, nobody is
    assert up == {"strategy": "linear", "size": "all", "transfer_wins_at": ["2", "5", "10"], "baseline": "scratch"}
    vs["partial"]["all"] = _d(0.08, win)
    assert catches_up(vs, "scratch")["size"] is None  # still ahead with every image
    never = {"linear": {"2": _d(0.01, tie), "all": _d(-0.01, tie)}}
    assert catches_up(never, "scratch")["transfer_wins_at"] == []
