"""``auto``'s selection rules (advisor/select.py): one-SE choice, the on-course test, CV splits, and
when fine-tuning is tried. The end-to-end paths (fit with auto, advise) are in test_contract.py."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from transferkit.advisor.select import CandidateScore, cv_rows, cv_splits, one_se_choice, trial_batchnorm
from transferkit.advisor.trials import network_arms, on_course


def cand(strategy: str, mean: float, se: float, complexity: int) -> CandidateScore:
    return CandidateScore(strategy=strategy, params={}, mean=mean, se=se, folds=10, seconds=0.0,
                          complexity=complexity)


def test_one_se_rule_prefers_the_simpler_candidate_within_one_standard_error():
    simple, fancy = cand("linear", 0.90, 0.02, 0), cand("head2toe", 0.91, 0.015, 2)
    chosen, best = one_se_choice([fancy, simple])
    assert best is fancy and chosen is simple


def test_one_se_rule_keeps_the_best_when_the_gap_is_larger_than_its_standard_error():
    simple, fancy = cand("linear", 0.85, 0.02, 0), cand("head2toe", 0.91, 0.015, 2)
    chosen, best = one_se_choice([simple, fancy])
    assert chosen is best is fancy


def test_one_se_rule_breaks_complexity_ties_by_mean():
    a, b = cand("linear", 0.88, 0.01, 0), cand("intermediate", 0.885, 0.01, 0)
    assert one_se_choice([a, b])[0] is b


def test_a_cut_point_chosen_among_many_wins_only_beyond_one_standard_error():
    """flowers5 25/class: intermediate(stage2) led Head2Toe by 0.4 points of CV (SE 4.1), the best of
    several cut points by chance; Head2Toe (all of them, no choice) was 7 points better held-out."""
    from transferkit.strategies import strategy_class

    def scored(strategy: str, mean: float, layer: str | None = None) -> CandidateScore:
        return CandidateScore(strategy, {"layer": layer} if layer else {}, mean, 0.041, 10, 0.0,
                              strategy_class(strategy).complexity)

    cut, h2t, linear = scored("intermediate", 0.608, "stage2"), scored("head2toe", 0.604), \
        scored("linear", 0.568, "pool")
    assert one_se_choice([linear, cut, h2t]) == (h2t, cut)
    far_ahead = scored("intermediate", 0.70, "stage2")  # more than one SE: the cut point is kept
    assert one_se_choice([linear, far_ahead, h2t])[0] is far_ahead


def test_trials_adopt_adabn_only_when_its_probe_beats_linear_by_one_standard_error():
    """The recipe's rule, decided once from auto's cross-validation: on 400 images one SE of 0.85 is 1.8 points."""
    linear = CandidateScore("linear", {"layer": "pool"}, 0.85, 0.02, 10, 0.0, 0)

    def adabn(mean: float, layer: str = "pool") -> CandidateScore:
        return CandidateScore("adabn", {"layer": layer}, mean, 0.02, 10, 0.0, 2)

    assert trial_batchnorm([linear, adabn(0.88)], 400)[0] == "adabn"
    policy, why = trial_batchnorm([linear, adabn(0.86), adabn(0.95, "stage4")], 400)
    assert policy == "eval" and "adabn(layer=pool) 86.0%" in why  # another cut point is not the fine-tunes' probe
    assert trial_batchnorm([linear], 400) == (None, None)  # similar data: adabn not scored, the recipe decides


def test_cv_splits_are_stratified_repeated_and_cover_every_row():
    y = np.repeat(np.arange(3), [10, 6, 4])
    splits = cv_splits(y, seed=0)
    assert len(splits) >= 10  # about CV_FITS fits
    k = min(5, 4)
    for i in range(0, k):
        tr, va = splits[i]
        assert set(np.unique(y[tr])) == {0, 1, 2} and len(np.intersect1d(tr, va)) == 0
    covered = np.concatenate([va for _, va in splits[:k]])
    assert sorted(covered.tolist()) == list(range(len(y)))  # the first repeat is a partition


def test_cv_splits_refuse_a_class_with_one_image():
    assert cv_splits(np.array([0, 0, 0, 1]), seed=0) == []


def test_cv_rows_subsample_large_data_stratified():
    y = np.repeat([0, 1], [9000, 1000])
    rows = cv_rows(y, seed=0)
    assert len(rows) == 2000 and np.all(np.diff(rows) > 0)
    assert abs((y[rows] == 1).mean() - 0.1) < 0.01


def hist(*accs: float) -> list[dict]:
    return [{"epoch": i + 1, "val_acc": a} for i, a in enumerate(accs)]


def test_on_course_keeps_a_trial_that_is_climbing_toward_the_target():
    # 0.80 -> 0.84 after one epoch, 9 left: projected 0.84 + 0.5 * 0.04 * 9 = 1.02 >= 0.90
    assert on_course(hist(0.84), target=0.90, planned=10, start=0.80)


def test_on_course_stops_a_trial_that_cannot_reach_the_target():
    # knocked down then flat: best 0.80 (the start), no gain per epoch
    assert not on_course(hist(0.60, 0.62, 0.61), target=0.85, planned=5, start=0.80)
    # already above the target: on course whatever the slope
    assert on_course(hist(0.92, 0.91), target=0.90, planned=5, start=0.85)


def advice(n_train: int, median: float, slope: float | None, score: float, table: str = "linear",
           strategy: str = "linear"):
    size = SimpleNamespace(n_train=n_train, median_per_class=median, slope_per_doubling=slope)
    return SimpleNamespace(size=size, similarity=SimpleNamespace(score=score, similar=score >= 0.5),
                           table_strategy=table, strategy=strategy)


def test_no_fine_tuning_trial_on_small_data_with_a_flat_learning_curve():
    arms, why = network_arms(advice(240, 120, 0.005, 0.8), best_cv=0.9)
    assert arms == [] and "small" in why[0]


def test_fine_tuning_is_tried_on_large_data_partial_when_similar_full_when_different():
    from transferkit.advisor.similarity import SIMILAR_THRESHOLD

    far = 0.3  # well away from the threshold: one arm
    assert network_arms(advice(3000, 600, 0.01, SIMILAR_THRESHOLD + far), 0.8)[0] == ["partial"]
    assert network_arms(advice(3000, 600, 0.01, SIMILAR_THRESHOLD - far), 0.8)[0] == ["full"]
    # near the threshold both pretrained arms race (successive halving)
    assert sorted(network_arms(advice(3000, 600, 0.01, SIMILAR_THRESHOLD + 0.01), 0.8)[0]) == ["full", "partial"]


def test_a_steep_learning_curve_makes_fine_tuning_worth_a_trial_on_small_data():
    arms, why = network_arms(advice(300, 60, 0.06, 0.9), best_cv=0.8)
    assert arms == ["partial"] and "per doubling" in why[0]


def test_nothing_left_to_win_means_no_trial():
    assert network_arms(advice(5000, 500, 0.01, 0.3), best_cv=0.998)[0] == []


@pytest.mark.parametrize("budget", [-1, "10", True])
def test_budget_must_be_minutes(budget, tiny_folder):
    from transferkit import TransferClassifier
    from transferkit.errors import ConfigError

    with pytest.raises(ConfigError, match="budget"):
        TransferClassifier(backbone="unused", strategy="auto", budget=budget).fit(tiny_folder)
