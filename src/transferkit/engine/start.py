"""Epoch 0: the network a fine-tune starts from, as a candidate of model selection.

A pretrained network whose head starts at the linear probe already scores something on the
selection images; a fine-tune that never beats it must end with it, not below it. Two ways in:

- ``fit_network(start_candidate=True)``: the network as training starts is epoch 0, scored on the
  selection images (``evaluate_start``);
- a ``StartCandidate``: the caller's weights and score (``adopt_start``), e.g. ``linear`` itself
  (the probe refitted on the selection images too, scored by cross-validation). An epoch then
  replaces it only by beating that score measurably, by ``MEASURABLE_Z`` standard errors of a
  proportion on the selection images (``margin_to_beat``): the best of several noisy epochs beats
  an honest estimate by chance. One standard error was not enough on breastmnist at 20 images per
  class: an epoch scoring 7 of its 8 selection images replaced ``linear`` (66.0% held-out) and
  scored 36.5% held-out.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import torch

from ..stats import CONFIDENCE, proportion_se
from .checkpoint import state_to_cpu
from .data import ArrayData
from .evaluate import evaluate
from .run import Run

# One-sided at ``transferkit.stats.CONFIDENCE`` (95%: 1.645), the standard transferkit holds a
# "measurable" difference to; rounded so the run's events print it as people write it.
MEASURABLE_Z = round(NormalDist().inv_cdf(CONFIDENCE), 3)


@dataclass
class StartCandidate:
    """Epoch 0 given by the caller: weights that may differ from those training starts from, and
    their selection score measured by the caller (e.g. a cross-validated estimate when the weights
    were fitted on the selection images themselves, which would make their score there optimistic).
    The run takes ``state``'s tensors over (CPU tensors are not copied)."""

    state: dict[str, torch.Tensor]
    score: float
    source: str  # how ``score`` was measured, for the run's events
    # Selection images an epoch is scored on: an epoch replaces this start only when it beats
    # ``score`` by MEASURABLE_Z standard errors of a proportion on that many images (0: by anything).
    n_val: int = 0


def evaluate_start(run: Run, val: ArrayData) -> None:
    """Score the starting network on the selection images and make it the best so far (epoch 0)."""
    metric = run.config.selection_metric
    acc = evaluate(run.fabric, run.net, val, run.per_rank * 2, run.config.label_smoothing)[metric]  # fp32
    run.best_acc, run.best_epoch, run.best_state, run.start_val_acc = acc, 0, state_to_cpu(run.net), acc
    run.event(f"the starting network scores {acc:.4f} ({metric.replace('_', ' ')}) on the selection images "
              "(epoch 0, a candidate).")


def adopt_start(run: Run, start: StartCandidate) -> None:
    """Make the caller's epoch-0 candidate the best so far."""
    run.best_acc = run.start_val_acc = float(start.score)
    run.best_epoch = 0
    run.best_state = {k: v.detach().to("cpu").contiguous() for k, v in start.state.items()}
    if start.n_val:
        run.start_margin = MEASURABLE_Z * proportion_se(start.score, start.n_val)
    metric = run.config.selection_metric.replace("_", " ")
    run.event(f"epoch 0 (a candidate): {start.source}, {metric} {start.score:.4f}; an epoch replaces it by "
              f"beating that by more than {run.start_margin:.4f} ({MEASURABLE_Z} standard errors, one-sided 95%) "
              "on the selection images.")


def margin_to_beat(run: Run) -> float:
    """How much an epoch must beat the best so far by: the start's margin while the start (scored
    elsewhere, e.g. by cross-validation) is the best, else nothing (epochs on the same images)."""
    return run.start_margin if run.best_epoch == 0 else 0.0
