"""What a result says, read from its dict: the best strategy, the headline, data-size curves,
the similarity measurements in either of their forms and the crossover in words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..stats import A_BETTER, B_BETTER
from .benefit import crossover, int_keys, is_finite
from .evidence import all_images_per_class, significance_of
from .markup import fmt_number
from .roles import BASELINE, pick_pair


def accuracy_of(result: Mapping[str, Any], name: str) -> float | None:
    acc = (result.get("strategies", {}).get(name) or {}).get("metrics", {}).get("accuracy")
    return float(acc) if is_finite(acc) else None


def best_strategy(result: Mapping[str, Any]) -> str | None:
    """``result['best_strategy']`` when it names a strategy, else the one with the highest accuracy."""
    strategies = result.get("strategies") or {}
    named = result.get("best_strategy")
    if named in strategies:
        return named
    scored = [(acc, name) for name in strategies if (acc := accuracy_of(result, name)) is not None]
    return max(scored)[1] if scored else None


def interval_text(stat: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``0.915 [0.861, 0.950]``; the bare number when no interval exists; an em dash when nothing does."""
    if not stat or not is_finite(stat.get("mean")):
        return "—"
    if not (is_finite(stat.get("low")) and is_finite(stat.get("high"))):
        return fmt_number(stat["mean"], digits)
    return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"


def points_text(d: Mapping[str, Any]) -> str:
    """A paired difference in points with its interval: ``+12.3 points [+8.1, +16.0]``."""
    return f"{100 * d['diff']:+.1f} points [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _where(result: Mapping[str, Any]) -> str:
    split = result.get("split") or {}
    where = ""
    if split.get("scored"):
        where = f" on {split['scored']}"
        if split.get("n_scored") is not None:
            where += f" ({split['n_scored']} images"
            repeats = result.get("repeats") or 1
            where += f", mean of {repeats} draws)" if repeats > 1 else ")"
    return where


def tested_headline(result: Mapping[str, Any], sig: Mapping[str, Any]) -> str:
    """The headline when paired tests exist: a best only if it is measurably best, transfer vs scratch
    in words only when the interval of the difference excludes zero."""
    best = sig["best"]
    top = best["strategy"]
    acc = interval_text(sig["summary"][top]["accuracy"])
    if best["clear"]:
        text = f"Best: {top} {acc}{_where(result)}, measurably ahead of every other strategy"
    elif len(best["top_group"]) > 1:
        text = (f"No single best: {', '.join(best['top_group'])} are within noise of each other "
                f"(highest {top} {acc}{_where(result)})")
    else:
        text = f"Only strategy: {top} {acc}{_where(result)}"
    vs = sig.get("vs_baseline") or {}
    if not vs:
        return text
    bt = max(vs, key=lambda n: sig["summary"][n]["accuracy"]["mean"])
    d = vs[bt]
    base = interval_text(sig["summary"][BASELINE]["accuracy"]) if BASELINE in sig["summary"] else ""
    if d["decision"] == A_BETTER:
        return text + f" — transfer helped: {bt} beats {BASELINE} ({base}) by {points_text(d)}"
    if d["decision"] == B_BETTER:
        return text + f" — transfer did not help: {BASELINE} ({base}) beats the best transfer, {bt}, by " + \
            points_text({**d, "diff": -d["diff"], "low": -d["high"], "high": -d["low"]})
    return text + f" — no measurable difference between {bt} and {BASELINE} ({base}): {points_text(d)}"


def headline(result: Mapping[str, Any]) -> str | None:
    """One sentence: the best strategy, where it was scored, and what transfer bought over scratch.

    With recorded per-image predictions every claim comes from a paired test (``tested_headline``);
    a result without them states its numbers as one untested draw and claims nothing.
    """
    sig = significance_of(result)
    if sig:
        return tested_headline(result, sig)
    best = best_strategy(result)
    if best is None:
        return None
    acc = accuracy_of(result, best)
    text = f"Highest: {best} {fmt_number(acc, 2)}{_where(result)}"
    scratch = accuracy_of(result, BASELINE)
    if best == BASELINE:
        others = [
            (a, n) for n in result.get("strategies", {}) if n != BASELINE and (a := accuracy_of(result, n)) is not None
        ]
        if others:
            a, n = max(others)
            return text + f"; the best pretrained strategy, {n}, scored {fmt_number(a, 2)} ({100 * (a - acc):+.0f} " \
                          "points; one draw, untested)"
        return text
    if scratch is None or acc is None:
        return text + f" (no {BASELINE} baseline was run)"
    gain = 100.0 * (acc - scratch)
    return text + f" vs {BASELINE} {fmt_number(scratch, 2)} ({gain:+.0f} points; one draw, untested)"


def data_size_curves(result: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    all_n = all_images_per_class(result)
    curves: dict[str, dict[int, float]] = {}
    for name, curve in (result.get("data_size") or {}).items():
        if not isinstance(curve, Mapping):
            continue
        c = int_keys(curve)
        if "all" in curve and all_n and is_finite(curve["all"]):
            c.setdefault(all_n, float(curve["all"]))
        if c:
            curves[str(name)] = dict(sorted(c.items()))
    return curves


def similarity_view(advisor: Mapping[str, Any]) -> dict[str, Any]:
    """summary / signals / per_layer / definition / notes of ``advisor['similarity']``, in either form."""
    sim = advisor.get("similarity") or {}
    if not isinstance(sim, Mapping):
        sim = {}
    per_layer = sim.get("per_layer") or {}
    if not per_layer and isinstance(sim.get("layers"), list):
        per_layer = {
            str(x["layer"]): {k: x.get(k) for k in ("probe_acc", "bn_similarity")}
            for x in sim["layers"]
            if isinstance(x, Mapping) and x.get("layer") is not None
        }
    summary = sim.get("summary")
    if not summary and is_finite(sim.get("score")):
        verdict = sim.get("similar")
        summary = f"score {sim['score']:.2f} of 1" + (
            "" if verdict is None else (" (similar to the source data)" if verdict else " (dissimilar)")
        )
    signals = sim.get("signals") if isinstance(sim.get("signals"), Mapping) else {}
    notes = sim.get("notes") if isinstance(sim.get("notes"), list) else []
    return {
        "summary": summary,
        "signals": signals,
        "per_layer": per_layer,
        "definition": sim.get("definition"),
        "notes": notes,
    }


def crossover_sentence(curves: Mapping[str, Mapping[int, float]]) -> str | None:
    """Where the fine-tune data-size curve overtakes the probe curve, in words (None without both)."""
    probe, fine = pick_pair(curves)
    if not (probe and fine):
        return None
    common = sorted(set(curves[probe]) & set(curves[fine]))
    if not common:
        return None
    n_star = crossover(curves[probe], curves[fine])
    if n_star is None:
        return f"{fine} never overtakes {probe} in the measured range ({common[0]}–{common[-1]} images per class)."
    if n_star == common[0] and curves[fine][n_star] > curves[probe][n_star]:
        return (
            f"{fine} is ahead of {probe} already at {n_star} images per class, the smallest size measured: fine-tune."
        )
    return (
        f"{fine} overtakes {probe} at about {n_star} training images per class, this dataset's small/large "
        "boundary: with fewer, train a probe; with more, fine-tune."
    )
