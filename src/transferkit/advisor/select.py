"""``auto``: a measured, budgeted choice among the strategies instead of a table look-up.

``select(...)`` runs in four steps, all on the training roles (the scored images are never used):

1. ``advise``: size, similarity, the four-case table's answer and the rule-based plan. They are the
   prior: they say which network strategies could win and for how many epochs.
2. **Feature-store candidates**: every registered feature-store strategy lists the settings worth
   scoring (``cv_candidates``: a cut point, a neighbour count...). Each is scored by repeated
   stratified K-fold cross-validation on the learnable images (train + selection roles: what the
   strategy itself learns from), every candidate on the same folds. The **one-standard-error
   rule** (Hastie, Tibshirani & Friedman, ESL 7.10) then takes the least complex candidate whose
   mean is within one standard error of the best one's, so a tie is never broken by noise.
3. **Network strategies**, only when the measurements say they could win: data that is not small,
   or a probe whose learning curve is still climbing. They are tried within the budget
   (``budget_s``) as successive halving (Jamieson & Talwalkar 2016; Hyperband, Li et al. 2018):
   every arm trains a first rung of epochs, the best continues, and a trial stops as soon as its
   selection accuracy, extrapolated over the epochs left, can no longer beat the best
   feature-store candidate (fitted on the training role, scored on the same selection images)
   by one standard error.
4. **The decision**: a network strategy only when it beat the feature-store winner on the
   selection images by more than one standard error; its trial is then the fitted model (no second
   training run). Otherwise the feature-store winner, fitted by its strategy as usual.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..stats import proportion_se
from ..strategies import strategy_class, strategy_names
from ..strategies._recipe import adabn_beats_source
from ._json import json_ready
from .trials import Trial, network_arms, run_trials, selection_accuracy

if TYPE_CHECKING:  # pragma: no cover
    from ..strategies import FitContext, FittedModel
    from .plan import Advice

# Cross-validation of the feature-store candidates: about CV_FITS fits per candidate (K folds,
# repeated), K = min(CV_FOLDS, smallest class); at most CV_MAX_ROWS images (stratified), enough to
# rank candidates a point apart while bounding the cost on large data.
CV_FOLDS = 5
CV_FITS = 10
CV_MAX_ROWS = 2000
# Above this many rows one K-fold pass is enough: the folds' spread already pins the mean down.
CV_REPEAT_MAX_ROWS = 500
# Cut points whose quick probe (the advisor's profile) is this far below the best one are not
# cross-validated again: a cut 10 points behind on 3 folds does not win on 10.
PRUNE_MARGIN = 0.10
# Default budget for the network trials, seconds (``fit --budget`` in minutes overrides it). On a
# 2-core CPU 5 minutes is about 4 epochs of 3,000 images at 224 px (enough to see whether a
# fine-tune overtakes the probe, and to keep auto within a third of a peer's fine-tune, issue 14);
# on a GPU it is many epochs.
DEFAULT_BUDGET_S = 5 * 60.0
# A planned fine-tune shorter than this many epochs (the budget's cap) is not worth a trial.
MIN_TRIAL_EPOCHS = 2
# A fine-tune (forward + backward) costs about this many forward passes per image.
TRAIN_FORWARD_RATIO = 3.0


@dataclass
class CandidateScore:
    """One feature-store candidate: its strategy and settings, and its cross-validated accuracy."""

    strategy: str
    params: dict[str, Any]
    mean: float
    se: float
    folds: int
    seconds: float
    complexity: int

    @property
    def label(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items() if v not in (None, ()))
        return f"{self.strategy}({shown})" if shown else self.strategy

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "params": self.params, "label": self.label, "cv_mean": self.mean,
                "cv_se": self.se, "cv_folds": self.folds, "seconds": round(self.seconds, 3),
                "complexity": self.complexity}


@dataclass
class Selection:
    """``auto``'s decision: the advice it started from, every candidate's score, the trials, why."""

    advice: Advice
    strategy: str
    params: dict[str, Any]
    candidates: list[CandidateScore]
    trials: list[Trial]
    reasons: list[str]
    cost: dict[str, float]
    network_plan: dict[str, Any]
    fs_val_acc: float | None = None
    model: FittedModel | None = None  # a trial's fitted network, when a network strategy won

    def to_dict(self) -> dict[str, Any]:
        out = self.advice.to_dict()
        out["selection"] = json_ready({
            "strategy": self.strategy, "params": self.params,
            "candidates": [c.to_dict() for c in self.candidates],
            "trials": [t.to_dict() for t in self.trials],
            "network_plan": self.network_plan, "feature_store_val_acc": self.fs_val_acc,
            "reasons": self.reasons, "cost": self.cost,
        })
        return out

    def summary_lines(self) -> list[str]:
        a = self.advice
        lines = [f"Decision: {self.strategy}" + (f" {_fmt_params(self.params)}" if self.params else "")]
        lines += [line for line in a.summary_lines() if not line.startswith("Advice:")]
        lines.append("Feature-store candidates (repeated stratified CV on the training images, mean ± 1 SE):")
        best = max(self.candidates, key=lambda c: c.mean) if self.candidates else None
        for c in sorted(self.candidates, key=lambda c: -c.mean):
            mark = " <- chosen" if (c.strategy, c.params) == (self.strategy, self.params) else (
                " (best mean)" if c is best else "")
            lines.append(f"  {c.label:<34} {100 * c.mean:5.1f} ± {100 * c.se:4.1f}  "
                         f"({c.folds} folds, {c.seconds:.1f} s){mark}")
        plan = self.network_plan
        if plan.get("arms"):
            lines.append(f"Fine-tuning: {', '.join(plan['arms'])}, {plan['epochs']} epochs planned, about "
                         f"{plan['seconds_per_epoch']:.0f} s per epoch here (budget {plan['budget_s'] / 60:.0f} min).")
        for t in self.trials:
            acc = "-" if t.best_val_acc is None else f"{100 * t.best_val_acc:.1f}%"
            lines.append(f"  trial {t.strategy}: {t.epochs_run}/{t.planned_epochs} epochs, best selection "
                         f"accuracy {acc}, {t.seconds:.0f} s; {t.stopped}")
        lines.append("Why:")
        lines += [f"  - {r}" for r in self.reasons]
        spent = self.cost.get("total_seconds")
        if spent is not None:
            lines.append(f"Selection took {spent:.1f} s.")
        return lines


def _fmt_params(params: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


# ------------------------------------------------------------------- feature-store candidates


def cv_splits(y: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Repeated stratified K-fold splits of rows ``y`` (about ``CV_FITS`` folds in all), or [] when
    a class has fewer than two images."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min()) if len(y) else 0
    k = min(CV_FOLDS, smallest)
    if k < 2:
        return []
    repeats = max(1, math.ceil(CV_FITS / k)) if len(y) <= CV_REPEAT_MAX_ROWS else 1
    rskf = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    return list(rskf.split(np.zeros(len(y)), y))


def cv_rows(y: np.ndarray, seed: int) -> np.ndarray:
    """Positions (into ``y``) of at most ``CV_MAX_ROWS`` rows, stratified, sorted."""
    if len(y) <= CV_MAX_ROWS:
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=CV_MAX_ROWS, stratify=y, random_state=seed)
    return np.sort(keep)


def pruned_layers(profile: dict[str, float | None]) -> list[str]:
    """Cut points whose quick probe accuracy is more than ``PRUNE_MARGIN`` below the best cut's."""
    known = {k: v for k, v in profile.items() if v is not None and np.isfinite(v)}
    top = max(known.values(), default=None)
    return [] if top is None else [k for k, v in known.items() if v < top - PRUNE_MARGIN]


def score_candidates(ctx: FitContext, learn_idx: np.ndarray, seed: int, *, similar: bool,
                     profile: dict[str, float] | None = None,
                     log: Callable[[str], None] | None = None) -> list[CandidateScore]:
    """Every feature-store candidate's repeated-CV accuracy on the rows ``learn_idx`` of the dataset.

    Candidates that need a forward pass of their own are scored only when the data is not
    ``similar``; candidates cut at a layer whose quick probe accuracy in ``profile`` is more than
    ``PRUNE_MARGIN`` below the best layer's are skipped.
    """
    skip = set(pruned_layers(profile or {}))
    labels = np.asarray(ctx.dataset.labels)
    rows = learn_idx[cv_rows(labels[learn_idx], seed)]
    y_all = labels[rows]
    present = np.unique(y_all)
    y = np.searchsorted(present, y_all)  # dense labels: folds need every class present
    splits = cv_splits(y, seed)
    if not splits:
        return []
    scores = []
    seen: dict[tuple[Any, ...], np.ndarray] = {}  # (how it is scored, its features) -> fold accuracies
    for name in strategy_names(feature_store=True):
        cls = strategy_class(name)
        if cls.own_forward_pass and similar:
            continue
        for params in cls.cv_candidates(ctx.backbone):
            layer = params.get("layer")
            if layer in skip:
                continue
            t0 = time.perf_counter()
            settings = {**cls.defaults, **params}  # what the strategy's fit would use
            feats = cls.candidate_features(ctx, settings)
            x = {k: np.asarray(v)[rows] for k, v in feats.items()}
            # The last cut point pooled is the final codes on most backbones, so e.g. intermediate
            # at stage5 is linear: scored once, listed under both names.
            key = _scoring_key(cls, settings, x)
            accs_arr = seen.get(key)
            if accs_arr is None:
                accs_arr = seen[key] = np.asarray(cls.cv_scores(x, y, splits, len(present), settings, seed),
                                                  dtype=np.float64)
            score = CandidateScore(strategy=name, params=dict(params), mean=float(accs_arr.mean()),
                                   se=float(accs_arr.std(ddof=1) / math.sqrt(len(accs_arr))) if len(accs_arr) > 1
                                   else 0.0, folds=len(accs_arr), seconds=time.perf_counter() - t0,
                                   complexity=cls.complexity)
            scores.append(score)
            if log is not None:
                log(f"{score.label}: {100 * score.mean:.1f} ± {100 * score.se:.1f}")
    return scores


def _scoring_key(cls: Any, settings: dict[str, Any], x: dict[str, np.ndarray]) -> tuple[Any, ...]:
    """What a candidate's cross-validated score depends on: the scoring (every plain probe shares
    one; another strategy's is its own, with its settings but the layer) and its features' bytes."""
    import hashlib

    how = ("probe",) if cls.plain_probe(settings) else (
        cls.name, repr(sorted((k, v) for k, v in settings.items() if k != "layer")))
    digest = hashlib.sha1()
    for v in x.values():
        digest.update(repr((v.shape, v.dtype.str)).encode())
        digest.update(np.ascontiguousarray(v).tobytes())
    return (*how, digest.hexdigest())


def one_se_choice(scores: list[CandidateScore]) -> tuple[CandidateScore, CandidateScore]:
    """(chosen, best by mean): the least complex candidate within one SE of the best mean (ties in
    complexity go to the higher mean)."""
    best = max(scores, key=lambda c: c.mean)
    within = [c for c in scores if c.mean >= best.mean - best.se]
    chosen = min(within, key=lambda c: (c.complexity, -c.mean))
    return chosen, best


def holdout_accuracy(ctx: FitContext, cand: CandidateScore, seed: int) -> tuple[float, np.ndarray] | None:
    """The candidate fitted on the train role and scored on the selection role (what network trials
    are compared against, on the same images): (accuracy, per-image correctness)."""
    if ctx.val_idx is None or len(ctx.val_idx) == 0:
        return None
    cls = strategy_class(cand.strategy)
    settings = {**cls.defaults, **cand.params}
    labels = np.asarray(ctx.dataset.labels)
    feats = cls.candidate_features(ctx, settings)
    present = np.unique(labels[ctx.train_idx])
    y_tr = np.searchsorted(present, labels[ctx.train_idx])
    predict = cls.fit_arrays({k: np.asarray(v)[ctx.train_idx] for k, v in feats.items()}, y_tr, len(present),
                             settings, seed)
    pred = present[predict({k: np.asarray(v)[ctx.val_idx] for k, v in feats.items()}).argmax(1)]
    correct = pred == labels[ctx.val_idx]
    return float(correct.mean()), correct


# ------------------------------------------------------------------------------ select


def select(advice: Advice, *, make_ctx: Callable[..., FitContext], epochs: int | None = None,
           budget_s: float | None = None, trials: bool = True, seed: int = 0,
           log: Callable[[str], None] | None = None) -> Selection:
    """``auto``'s choice for the measured ``advice`` (see the module docstring).

    ``make_ctx(strategy, epochs=None, keep_going=None, resume=False)`` builds a FitContext over the
    training roles for ``strategy`` (the caller's parameters and run directory); ``epochs`` is the
    network trials' planned length (default: the advisor's ``finetune_epochs``); ``budget_s`` bounds
    the trials' wall time (default ``DEFAULT_BUDGET_S``); ``trials=False`` (``advise``) scores the
    feature-store candidates and plans the trials without running them.
    """
    t0 = time.perf_counter()
    budget_s = DEFAULT_BUDGET_S if budget_s is None else float(budget_s)
    reasons: list[str] = [f"Four-case table: {advice.table_rule}."]
    cost: dict[str, float] = {"advise_seconds": advice.cost_seconds}
    # No monitored images here: the candidates score and fit on the learnable ones only, and a
    # candidate with its own forward pass (adabn) then runs it on those alone.
    base_ctx = replace(make_ctx("linear"), monitor_idx=None)
    learn = np.sort(np.concatenate([base_ctx.train_idx] + (
        [base_ctx.val_idx] if base_ctx.val_idx is not None else [])))
    scores = score_candidates(base_ctx, learn, seed, similar=advice.similarity.similar,
                              profile=advice.similarity.probe_profile(), log=log)
    cost["cv_seconds"] = round(sum(c.seconds for c in scores), 3)
    pruned = [k for k in pruned_layers(advice.similarity.probe_profile()) if k != "stem"]
    if pruned:
        reasons.append(f"Not cross-validated again: the cut points {', '.join(pruned)}, whose quick probe was more "
                       f"than {100 * PRUNE_MARGIN:.0f} points below the best cut's.")
    if not scores:
        reasons.append("Cross-validation needs two training images in every class; the advisor's rule "
                       f"stands: {advice.strategy}.")
        return Selection(advice=advice, strategy=advice.strategy, params=advice.strategy_params(), candidates=[],
                         trials=[], reasons=reasons + advice.reasons, cost=cost, network_plan={})
    chosen, best = one_se_choice(scores)
    if chosen is best:
        reasons.append(f"Best feature-store candidate by cross-validation: {best.label} "
                       f"{100 * best.mean:.1f} ± {100 * best.se:.1f}%.")
    else:
        reasons.append(f"One-standard-error rule: {chosen.label} ({100 * chosen.mean:.1f}%) is within one SE "
                       f"({100 * best.se:.1f}) of the best mean, {best.label} ({100 * best.mean:.1f}%), and "
                       "simpler: the difference is noise.")
    arms, why = network_arms(advice, best.mean)
    reasons += why
    plan: dict[str, Any] = {}
    decision = Selection(advice=advice, strategy=chosen.strategy, params=dict(chosen.params), candidates=scores,
                         trials=[], reasons=reasons, cost=cost, network_plan=plan)
    if arms:
        per_image = advice.cost.get("forward_seconds_per_image")
        n_train = len(base_ctx.train_idx)
        epoch_s = TRAIN_FORWARD_RATIO * float(per_image) * n_train if per_image else 0.0
        planned = int(epochs or advice.epochs or _default_epochs(n_train))
        if epoch_s > 0 and planned * epoch_s > budget_s:
            # The schedule is planned to finish within the budget (a cosine schedule cut half-way
            # ends at a high learning rate).
            fits = int(budget_s // epoch_s)
            reasons.append(f"{planned} epochs would take about {planned * epoch_s / 60:.0f} min; the budget "
                           f"({budget_s / 60:.0f} min, --budget) allows {fits}.")
            planned = fits
        plan.update({"arms": arms, "epochs": planned, "seconds_per_epoch": round(epoch_s, 1),
                     "budget_s": budget_s, "estimated_seconds": round(epoch_s * planned, 1)})
        holdout = holdout_accuracy(base_ctx, chosen, seed) if planned >= MIN_TRIAL_EPOCHS else None
        if planned < MIN_TRIAL_EPOCHS:
            reasons.append(f"Fine-tuning not tried: fewer than {MIN_TRIAL_EPOCHS} epochs fit in the budget.")
        elif holdout is None:
            reasons.append("No selection images (val_fraction 0): fine-tuning cannot be compared; not tried.")
        elif not trials:
            reasons.append(f"A fine-tune of {planned} epochs would take about {epoch_s * planned / 60:.1f} min here "
                           "(fit --strategy auto runs it as a budgeted trial).")
        else:
            fs_val, _ = holdout
            n_val = len(base_ctx.val_idx)
            se = proportion_se(fs_val, n_val)
            target = min(1.0, fs_val + se)
            decision.fs_val_acc = fs_val
            start = fs_val if chosen.strategy == "linear" else _start_accuracy(base_ctx, scores, seed)
            policy, why_bn = trial_batchnorm(scores, len(learn))
            if why_bn:
                reasons.append(why_bn)

            def trial_ctx(*args: Any, **kwargs: Any) -> FitContext:
                ctx = make_ctx(*args, **kwargs)
                if policy is not None and ctx.params.get("bn_policy") == "auto":  # not set by the user
                    ctx.params = {**ctx.params, "bn_policy": policy}
                return ctx

            t1 = time.perf_counter()
            done, halving = run_trials(arms, make_ctx=trial_ctx, planned=planned, target=target, start=start,
                                       budget_s=budget_s, epoch_s=epoch_s, log=log)
            cost["trials_seconds"] = round(time.perf_counter() - t1, 3)
            decision.trials = done
            reasons += halving
            # Every finished trial's model scored on the same selection images as the feature-store
            # candidate, in plain accuracy (a trial picks its epoch by balanced accuracy on
            # imbalanced classes; the decision compares like with like).
            for t in done:
                if t.model is not None and t.model.info.get("best_epoch") == 0:
                    # It ended at its epoch-0 candidate, the linear probe refitted on the selection
                    # images too: no fine-tune to keep, and no honest score on those images.
                    t.best_val_acc = None
                    t.stopped += "; no epoch beat its start (the linear probe)"
                elif t.model is not None:
                    t.best_val_acc = selection_accuracy(base_ctx, t.model)
            finished = [t for t in done if t.best_val_acc is not None]
            winner = max(finished, key=lambda t: t.best_val_acc) if finished else None
            if winner is not None and winner.best_val_acc >= target:
                decision.strategy, decision.params, decision.model = winner.strategy, winner.params, winner.model
                reasons.append(f"{winner.strategy} reached {100 * winner.best_val_acc:.1f}% on the {n_val} selection "
                               f"images against {100 * fs_val:.1f}% for {chosen.label} fitted on the same training "
                               f"images: more than one standard error ({100 * se:.1f}) better, so it is kept.")
            else:
                got = "" if winner is None else f" (best {winner.strategy} {100 * winner.best_val_acc:.1f}%)"
                reasons.append(f"No fine-tune beat {chosen.label}'s {100 * fs_val:.1f}% on the {n_val} selection "
                               f"images by one standard error ({100 * se:.1f}){got}: the feature-store candidate "
                               "is kept.")
    cost["total_seconds"] = round(advice.cost_seconds + time.perf_counter() - t0, 3)
    return decision


def trial_batchnorm(scores: list[CandidateScore], n_learn: int) -> tuple[str | None, str | None]:
    """The trials' BatchNorm policy, from the cross-validation just run: the fine-tuning recipe's
    AdaBN rule (``strategies._recipe.adabn_beats_source``) applied to ``adabn`` and ``linear`` at
    the final codes, which are exactly the two probes the recipe compares, scored on more images
    here; so each trial need not measure the divergence and fit both probes again. (None, None)
    when adabn was not scored (similar data): the recipe decides."""
    linear = next((c for c in scores if c.strategy == "linear" and c.params.get("layer", "pool") == "pool"), None)
    adabn = next((c for c in scores if c.strategy == "adabn" and c.params.get("layer") == "pool"), None)
    if linear is None or adabn is None:
        return None, None
    adopted, margin = adabn_beats_source(linear.mean, adabn.mean, n_learn)
    if adopted:
        return "adabn", (f"Fine-tuning trials re-estimate the BatchNorm statistics (AdaBN): {adabn.label} "
                         f"{100 * adabn.mean:.1f}% beats {linear.label} {100 * linear.mean:.1f}% by more than one "
                         f"standard error ({100 * margin:.1f}).")
    return "eval", (f"Fine-tuning trials keep the source BatchNorm statistics: {adabn.label} "
                    f"{100 * adabn.mean:.1f}% does not beat {linear.label} {100 * linear.mean:.1f}% by one "
                    f"standard error ({100 * margin:.1f}).")


def _default_epochs(n_train: int) -> int:
    from .rules import finetune_epochs

    return finetune_epochs(n_train)


def _start_accuracy(ctx: FitContext, scores: list[CandidateScore], seed: int) -> float | None:
    """Selection accuracy of the linear probe on the final codes fitted on the training role: where
    a pretrained network strategy starts (its head starts at that probe)."""
    linear = [c for c in scores if c.strategy == "linear"]
    if not linear:
        return None
    out = holdout_accuracy(ctx, linear[0], seed)
    return None if out is None else out[0]
