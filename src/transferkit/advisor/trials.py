"""``auto``'s fine-tuning trials: when a network strategy is worth one, the on-course test, and
successive halving within the budget (``select`` runs them; its docstring says how they fit in).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..strategies import strategy_class
from .rules import STEEP_SLOPE, is_small

if TYPE_CHECKING:  # pragma: no cover
    from ..strategies import FitContext, FittedModel
    from .plan import Advice

# Network trials: the first rung's share of the planned epochs (successive halving, eta = 3).
RUNG_ETA = 3
# Similarity within this of the threshold is ambiguous: both pretrained network arms are tried.
AMBIGUOUS_SIMILARITY = 0.1

@dataclass
class Trial:
    """One network strategy's budgeted trial."""

    strategy: str
    params: dict[str, Any]
    planned_epochs: int
    epochs_run: int = 0
    best_val_acc: float | None = None
    seconds: float = 0.0
    stopped: str = ""
    model: FittedModel | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "params": self.params, "planned_epochs": self.planned_epochs,
                "epochs_run": self.epochs_run, "best_val_acc": self.best_val_acc,
                "seconds": round(self.seconds, 3), "stopped": self.stopped}



def network_arms(advice: Advice, best_cv: float | None) -> tuple[list[str], list[str]]:
    """(network strategies worth a trial, in order of prior preference; the reasons)."""
    size, sim = advice.size, advice.similarity
    slope = size.slope_per_doubling
    steep = slope is not None and np.isfinite(slope) and slope >= STEEP_SLOPE
    if is_small(size) and not steep:
        return [], [
            "No fine-tuning trial: the data is small and the probe's learning curve is flat "
            + (f"({100 * slope:+.1f} points per doubling)" if slope is not None and np.isfinite(slope) else "")
            + "; on such data fine-tuning lost to the feature-store strategies (README, benchmarks/advisor.py)."
        ]
    if best_cv is not None and best_cv >= 0.995:
        return [], [f"No fine-tuning trial: the best feature-store candidate already scores "
                    f"{100 * best_cv:.1f}%, nothing measurable is left to win."]
    why = ("the data is not small" if not is_small(size)
           else f"the probe still gains {100 * slope:.1f} points per doubling of the data")
    if advice.table_strategy == "scratch" or advice.strategy == "scratch":
        arms = ["scratch", "full"]
    elif abs(sim.score - _similar_threshold()) < AMBIGUOUS_SIMILARITY:
        arms = ["partial", "full"] if sim.similar else ["full", "partial"]
    else:
        arms = ["partial"] if sim.similar else ["full"]
    return arms, [f"Fine-tuning could win ({why}): trying {', '.join(arms)} within the budget."]


def _similar_threshold() -> float:
    from .similarity import SIMILAR_THRESHOLD

    return SIMILAR_THRESHOLD


def on_course(history: list[dict[str, Any]], *, target: float, planned: int, start: float | None) -> bool:
    """Can this trial still beat ``target`` on the selection images? Its best accuracy so far plus
    the recent gain per epoch (half of it: gains shrink as training goes on) over the epochs left."""
    accs = [float(r["val_acc"]) for r in history if r.get("val_acc") is not None]
    if not accs:
        return True
    k = len(accs)
    best = max(accs + ([start] if start is not None else []))
    prev = accs[-3] if k >= 3 else (accs[0] if k == 2 else start)
    rate = 0.0 if prev is None else max(0.0, (accs[-1] - prev) / (2 if k >= 3 else 1))
    projected = best + 0.5 * rate * (planned - k)
    return projected >= target


def run_trials(arms: list[str], *, make_ctx: Callable[[str, int, Callable | None, bool], FitContext],
               planned: int, target: float, start: float | None, budget_s: float, epoch_s: float,
               log: Callable[[str], None] | None = None) -> tuple[list[Trial], list[str]]:
    """Successive halving over ``arms``: a first rung of ``planned // RUNG_ETA`` epochs (at least 1)
    each, then the best arm continues to ``planned``; every trial stops as soon as it is off course
    (``on_course``) or out of budget. ``make_ctx(strategy, epochs, keep_going, resume)`` builds the
    trial's FitContext (its own run directory, so a continued rung resumes from its checkpoint)."""
    reasons: list[str] = []
    trials = {arm: Trial(strategy=arm, params={}, planned_epochs=planned) for arm in arms}
    spent = 0.0

    def fit_until(trial: Trial, stop_at: int, resume: bool) -> None:
        nonlocal spent
        t0 = time.perf_counter()

        def keep_going(history: list[dict[str, Any]]) -> bool:
            elapsed = spent + time.perf_counter() - t0
            if elapsed + epoch_s > budget_s:
                trial.stopped = f"stopped: the next epoch would pass the budget ({budget_s / 60:.0f} min)"
                return False
            if not on_course(history, target=target, planned=planned, start=start):
                trial.stopped = (f"stopped after epoch {len(history)}: cannot reach the feature-store "
                                 f"candidate's {100 * target:.1f}% on course")
                return False
            if len(history) >= stop_at:
                trial.stopped = f"rung of {stop_at} epoch(s) done"
                return False
            return True

        # A continued rung resumes from the trial's checkpoint; a first rung follows the run's own
        # resume setting (make_ctx's default).
        ctx = make_ctx(trial.strategy, planned, keep_going, True) if resume else \
            make_ctx(trial.strategy, planned, keep_going)
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        strategy = strategy_class(trial.strategy)()
        trial.model = strategy.fit(ctx)
        trial.params = dict(ctx.params)
        trial.history = list(ctx.history)
        trial.epochs_run = int(trial.model.info.get("epochs_run", len(trial.history)))
        trial.best_val_acc = trial.model.info.get("best_val_acc")
        dt = time.perf_counter() - t0
        trial.seconds += dt
        spent += dt
        if trial.epochs_run >= planned and not trial.stopped.startswith("stopped"):
            trial.stopped = "ran every planned epoch"
        if log is not None:
            log(f"trial {trial.strategy}: {trial.epochs_run} epochs, best {trial.best_val_acc}, {trial.stopped}")

    rung = max(1, planned // RUNG_ETA) if len(arms) > 1 else planned
    for arm in arms:
        if spent + epoch_s > budget_s:
            trials[arm].stopped = "not started: no budget left"
            continue
        fit_until(trials[arm], rung, resume=False)
    alive = [t for t in trials.values() if t.model is not None and t.stopped.startswith("rung")]
    if alive and rung < planned:
        best = max(alive, key=lambda t: t.best_val_acc or 0.0)
        for t in alive:
            if t is not best:
                t.stopped = f"halved after {rung} epoch(s): {best.strategy} was ahead"
        reasons.append(f"Successive halving: after {rung} epoch(s) {best.strategy} led; it continues.")
        best.stopped = ""
        fit_until(best, planned, resume=True)
    return list(trials.values()), reasons


def selection_accuracy(ctx: FitContext, model: FittedModel) -> float:
    """Accuracy of a fitted network on the selection images (decoded once, cached)."""
    from ..strategies._network import decoded_images

    images = np.asarray(decoded_images(ctx, ctx.backbone)[ctx.val_idx])
    pred = model.predict(images)
    classes = list(ctx.dataset.classes)
    return float((np.asarray(pred) == np.asarray(ctx.dataset.labels)[ctx.val_idx]).mean()) \
        if list(model.classes) == classes else float("nan")
