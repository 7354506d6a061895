"""What transfer learning bought: start, slope and asymptote against training from scratch.

Definitions (all accuracies are fractions in [0, 1]; differences are reported in points,
1 point = 0.01 accuracy). Every number is read from one learning curve: the per-epoch
accuracy named by ``metric`` (by default ``monitor_acc``, accuracy on the held-out split that
is only recorded for the report and never used to choose anything).

- **start**: accuracy after the first epoch. For a strategy fitted in one go (a linear
  probe on frozen features, whose history has a single entry) it is that single accuracy:
  the probe before any training of the network body.
- **slope**: mean gain per epoch over the first ``first_epochs`` epochs,
  ``(acc[k] - acc[1]) / (k - 1)`` with ``k = min(first_epochs, epochs)``. It measures how
  fast the curve rises after the first epoch, separately from where it starts. It is 0 for a
  single-entry history (nothing to rise).
- **AUC**: area under the learning curve (trapezoid rule over epochs 1..E) divided by
  ``E - 1``: the curve's mean height, in accuracy units; equal to the single value for a
  single-entry history. A curve that starts high and rises fast has a high AUC.
- **asymptote**: best accuracy over all epochs (the level training reaches).
- **delta**: the strategy's number minus the baseline's (``scratch``: the same network from
  random initialisation) number.
- **negative transfer**: starting from pretrained weights ended measurably worse than starting
  from random ones: the paired test of the two strategies' final held-out accuracy (``verdicts``,
  from ``report.evidence.significance``) says the baseline is better. Without a test nothing is
  flagged: a curve below the baseline's is described ("ends 0.4 points below"), never called
  negative transfer, because one draw cannot tell a real gap from noise.

Data-size curves (``crossover``): accuracy against images per class for a probe strategy
(frozen features) and a fine-tuning strategy. Probes usually win with few images per class,
fine-tuning with many; the images-per-class count where the fine-tune line first rises
above the probe line is this dataset's small/large boundary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from ..stats import B_BETTER
from .roles import BASELINE

DEFINITIONS: dict[str, str] = {
    "start": (
        "Accuracy after the first epoch; for a strategy fitted in one go (a linear probe, single-entry "
        "history) the probe's accuracy before any training of the network body."
    ),
    "slope": (
        "Mean gain per epoch over the first k epochs: (acc[k] - acc[1]) / (k - 1). 0 for a strategy fitted in one go."
    ),
    "auc": (
        "Area under the learning curve (trapezoid over epochs 1..E) divided by E - 1: the curve's mean "
        "height. Equal to the single value for a strategy fitted in one go."
    ),
    "asymptote": "Best accuracy over all epochs.",
    "delta": "Strategy minus baseline (the same network trained from random initialisation), in points.",
    "negative_transfer": (
        "The baseline (random initialisation) is measurably better: the 95% interval of the paired difference "
        "in held-out accuracy excludes zero and the exact sign test agrees."
    ),
    "crossover": (
        "Images per class where the fine-tune data-size curve first rises above the probe curve "
        "(interpolated on a log scale): below it, train a probe; above it, fine-tune."
    ),
}

_NUMBERS = ("start", "slope", "auc", "asymptote")


def _curve(history: Sequence[Mapping[str, Any]], metric: str, fallback: str | None) -> tuple[list, str]:
    """Epoch-ordered accuracies of ``metric`` (or ``fallback`` when no entry has ``metric``)."""

    def values(key: str) -> list[float]:
        rows = sorted(
            (row for row in history if is_finite(row.get(key))),
            key=lambda row: row.get("epoch", 0),
        )
        return [float(row[key]) for row in rows]

    acc = values(metric)
    if acc:
        return acc, metric
    if fallback and fallback != metric:
        acc = values(fallback)
        if acc:
            return acc, fallback
    return [], metric


def is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def curve_numbers(acc: Sequence[float], first_epochs: int = 3) -> dict[str, Any]:
    """start / slope / auc / asymptote of one learning curve (see the module docstring)."""
    if not acc:
        raise ConfigError("curve_numbers needs at least one accuracy value; got an empty curve.")
    epochs = len(acc)
    start = float(acc[0])
    asymptote = float(max(acc))
    if epochs == 1:
        return {
            "start": start,
            "slope": 0.0,
            "auc": start,
            "asymptote": asymptote,
            "epochs": 1,
            "best_epoch": 1,
            "single_fit": True,
        }
    k = min(first_epochs, epochs)
    slope = (float(acc[k - 1]) - start) / (k - 1) if k >= 2 else 0.0
    area = sum((float(a) + float(b)) / 2.0 for a, b in zip(acc[:-1], acc[1:], strict=True))
    return {
        "start": start,
        "slope": slope,
        "auc": area / (epochs - 1),
        "asymptote": asymptote,
        "epochs": epochs,
        "best_epoch": int(max(range(epochs), key=lambda i: acc[i])) + 1,
        "single_fit": False,
    }


def _pts(x: float) -> str:
    return f"{100.0 * x:+.1f}"


def _sentence(name: str, row: dict[str, Any], baseline: str, has_baseline: bool) -> str:
    if row["single_fit"]:
        how = f"{name} is fitted in one go (no epochs): start = best = {row['asymptote']:.3f}, slope = 0"
    else:
        how = None
    if name == baseline:
        if how:
            return how + " (baseline)."
        return (
            f"{name} (baseline): starts at {row['start']:.3f}, gains {_pts(row['slope'])} points/epoch "
            f"early, best {row['asymptote']:.3f} at epoch {row['best_epoch']}."
        )
    if not has_baseline:
        if how:
            return how + f"; no {baseline} run to compare with."
        return (
            f"{name}: starts at {row['start']:.3f}, gains {_pts(row['slope'])} points/epoch early, "
            f"best {row['asymptote']:.3f}; no {baseline} run to compare with."
        )
    d = row["delta"]
    if row["negative_transfer"]:
        lead = (
            f"NEGATIVE TRANSFER: {name} ends {abs(100.0 * d['asymptote']):.1f} points below {baseline} "
            f"(best {row['asymptote']:.3f} vs {row['asymptote'] - d['asymptote']:.3f}; {row['verdict']})"
        )
        rest = f"{_pts(d['start'])} points at start"
    elif d["asymptote"] < 0:
        lead = (
            f"{name} ends {abs(100.0 * d['asymptote']):.1f} points below {baseline} on its learning curve, "
            + (f"but {row['verdict']}" if row.get("verdict") else "untested (no per-image predictions)")
        )
        rest = f"{_pts(d['start'])} points at start"
    else:
        lead = f"{name}: {_pts(d['start'])} points at start"
        rest = None
    parts = [lead]
    if rest:
        parts.append(rest)
    if row["single_fit"]:
        parts.append("no slope (fitted in one go, no epochs)")
    elif d["slope"] is None:
        parts.append(f"no slope comparison ({baseline} was fitted in one go)")
    else:
        parts.append(f"{_pts(d['slope'])} points/epoch slope")
    parts.append(f"{_pts(d['auc'])} points AUC")
    if d["asymptote"] >= 0:
        parts.append(f"{_pts(d['asymptote'])} points at the asymptote")
    return ", ".join(parts) + f" vs {baseline}."


def transfer_benefit(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    baseline: str = BASELINE,
    first_epochs: int = 3,
    metric: str = "monitor_acc",
    *,
    fallback: str | None = "val_acc",
    tolerance: float = 0.0,
    verdicts: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Start, slope, AUC and asymptote per strategy, and their differences from ``baseline``.

    ``histories`` maps strategy name -> list of per-epoch dicts (keys ``epoch``, ``train_loss``,
    ``val_loss``, ``val_acc``, ``monitor_acc``, ...). Entries whose ``metric`` is missing, None or
    NaN are ignored; a strategy with no ``metric`` values at all is read from ``fallback``
    ``verdicts`` maps strategy -> its paired comparison with the baseline (``paired_difference``
    plus ``text``); only a ``b_better`` verdict whose learning curve also ends more than
    ``tolerance`` below the baseline's is flagged as negative transfer.
    (``val_acc``) and says so in its ``metric`` field. Strategies with no usable value are left
    out and listed under ``skipped``.

    Returns::

        {
          "baseline": "scratch", "metric": "monitor_acc", "first_epochs": 3,
          "tolerance": 0.0, "has_baseline": bool,
          "definitions": {name: sentence},            # DEFINITIONS
          "strategies": {
            name: {
              "start", "slope", "auc", "asymptote": float,  # accuracy units (slope per epoch)
              "epochs": int, "best_epoch": int, "single_fit": bool, "metric": str,
              "delta": {"start", "slope", "auc", "asymptote": float} | None,  # None for baseline;
                                                       # delta["slope"] is None when either side
                                                       # was fitted in one go
              "negative_transfer": bool,
              "summary": str,                          # one sentence, in points
            }
          },
          "negative_transfer": [names],                # strategies flagged
          "skipped": {name: reason},
        }
    """
    if first_epochs < 2:
        raise ConfigError(f"first_epochs must be at least 2 (a slope needs two epochs); got {first_epochs}.")
    rows: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name, history in histories.items():
        acc, used = _curve(history or [], metric, fallback)
        if not acc:
            skipped[name] = f"no finite '{metric}'" + (f" or '{fallback}'" if fallback else "") + " values"
            continue
        row = curve_numbers(acc, first_epochs)
        row["metric"] = used
        rows[name] = row

    has_baseline = baseline in rows
    base = rows.get(baseline)
    flagged: list[str] = []
    for name, row in rows.items():
        if base is None or name == baseline:
            row["delta"] = None
            row["negative_transfer"] = False
            row["verdict"] = row["decision"] = None
        else:
            row["delta"] = {k: row[k] - base[k] for k in _NUMBERS}
            if row["single_fit"] or base["single_fit"]:
                row["delta"]["slope"] = None  # no epochs on one side: nothing to compare
            verdict = (verdicts or {}).get(name)
            row["verdict"] = verdict.get("text") if verdict else None
            row["decision"] = verdict.get("decision") if verdict else None
            row["negative_transfer"] = bool(verdict and verdict.get("decision") == B_BETTER
                                            and row["delta"]["asymptote"] < -tolerance)
        if row["negative_transfer"]:
            flagged.append(name)
        row["summary"] = _sentence(name, row, baseline, has_baseline)

    return {
        "baseline": baseline,
        "metric": metric,
        "first_epochs": first_epochs,
        "tolerance": tolerance,
        "has_baseline": has_baseline,
        "definitions": dict(DEFINITIONS),
        "strategies": rows,
        "negative_transfer": flagged,
        "skipped": skipped,
    }


def int_keys(curve: Mapping[Any, Any]) -> dict[int, float]:
    """``{n: acc}`` with int keys (JSON turns them into strings); non-numeric keys are dropped."""
    out: dict[int, float] = {}
    for key, value in curve.items():
        try:
            n = int(key)
        except (TypeError, ValueError):
            continue
        if n > 0 and is_finite(value):
            out[n] = float(value)
    return out


def crossover(curve_probe: Mapping[Any, float], curve_finetune: Mapping[Any, float]) -> int | None:
    """Images per class where the fine-tune curve first beats the probe curve.

    Both curves map images per class -> accuracy (int keys, or int-like strings after a JSON
    round trip). Only sizes present in both curves are compared, in increasing order. Let
    ``d(n) = finetune(n) - probe(n)``:

    - if ``d > 0`` already at the smallest common size, that size is returned (fine-tuning
      wins everywhere measured);
    - otherwise, at the first pair of consecutive sizes ``n1 < n2`` with ``d(n1) <= 0 < d(n2)``
      the crossing is interpolated linearly in ``log(n)``:
      ``log n* = log n1 + d(n1) / (d(n1) - d(n2)) * (log n2 - log n1)``, and ``round(n*)`` is
      returned (at least ``n1 + 1`` when ``d(n1) < 0``, at most ``n2``);
    - ``None`` when the fine-tune curve never rises above the probe (or fewer than one common size).
    """
    probe = int_keys(curve_probe)
    fine = int_keys(curve_finetune)
    sizes = sorted(set(probe) & set(fine))
    if not sizes:
        return None
    diff = [fine[n] - probe[n] for n in sizes]
    if diff[0] > 0:
        return sizes[0]
    for i in range(len(sizes) - 1):
        n1, n2, d1, d2 = sizes[i], sizes[i + 1], diff[i], diff[i + 1]
        if d1 <= 0 < d2:
            t = d1 / (d1 - d2)
            n_star = math.exp(math.log(n1) + t * (math.log(n2) - math.log(n1)))
            lo = n1 + 1 if d1 < 0 else n1
            return int(min(n2, max(lo, round(n_star))))
    return None
