"""The report's opening paragraph, in words a non-expert can read, and the data-size story.

Every claim here is one a paired test supports (``report.evidence``); a difference the test
cannot tell from noise is said as "no measurable difference", never as a win.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..stats import A_BETTER, B_BETTER
from .findings import points_text
from .roles import BASELINE


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _size(size: Any) -> str:
    return "all training images" if str(size) == "all" else f"{size} training images per class"


def plain_paragraph(result: Mapping[str, Any], sig: Mapping[str, Any] | None,
                    size_ev: Mapping[str, Any] | None) -> str | None:
    """Three to five sentences: what was measured, who won (if anyone measurably), what transfer bought."""
    if not sig:
        return None
    split = result.get("split") or {}
    repeats = result.get("repeats") or 1
    n = split.get("n_scored")
    names = list(sig["summary"])
    out = [
        f"We trained {len(names)} ways of building the classifier and scored each on {n} images it never saw"
        + (f", {repeats} times with a different training draw and seed" if repeats > 1 else "")
        + ". Every accuracy comes with a 95% interval: the range the true accuracy plausibly lies in."
    ]
    best = sig["best"]
    if best["clear"]:
        out.append(f"{best['strategy']} is measurably the best.")
    elif len(best["top_group"]) > 1:
        out.append(f"{_and(best['top_group'])} score within noise of each other: none of them is measurably "
                   "better, so pick the cheapest.")
    vs = sig.get("vs_baseline") or {}
    helped = [k for k, d in vs.items() if d["decision"] == A_BETTER]
    hurt = [k for k, d in vs.items() if d["decision"] == B_BETTER]
    if vs:
        if helped:
            out.append(f"With all training images, starting from the pretrained network beats training from "
                       f"scratch for {_and(helped)}.")
        else:
            out.append("With all training images, no pretrained strategy is measurably better than training the "
                       "same network from scratch.")
        if hurt:
            out.append(f"{_and(hurt)} {'is' if len(hurt) == 1 else 'are'} measurably worse than scratch "
                       "(negative transfer).")
    story = size_story(size_ev)
    if story:
        out.append(story)
    advisor = (result.get("advisor") or {}).get("strategy")
    if advisor:
        where = "among the best" if advisor in best["top_group"] else "not among the best measured"
        out.append(f"The advisor, which decides before any of this training, chose {advisor}: {where}.")
    return " ".join(out)


def size_story(size_ev: Mapping[str, Any] | None) -> str | None:
    """Where transfer wins on the data-size curves and by how much, and where scratch catches up."""
    if not size_ev or not size_ev.get("catches_up"):
        return None
    up = size_ev["catches_up"]
    base = up.get("baseline", BASELINE)
    if not up["transfer_wins_at"]:
        return f"On the data-size curves no transfer strategy is measurably better than {base} at any size."
    name = up["strategy"]
    first = up["transfer_wins_at"][0]
    d = size_ev["vs_baseline"][name][str(first)]
    text = f"With {_size(first)}, {name} beats {base} by {points_text(d)}"
    if up["size"] is None:
        return text + f"; {base} has not caught up even with all training images."
    return text + f"; {base} catches up from {_size(up['size'])} on (no measurable difference from there)."
