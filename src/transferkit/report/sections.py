"""The page's sections about the outcome: summary, what transfer bought, strategies, data-size
numbers and strategy parameters. Each returns an HTML fragment, or "" when the result lacks its data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..stats import A_BETTER, B_BETTER
from .benefit import DEFINITIONS, is_finite
from .evidence import curve_benefit_over_draws, significance_of, size_evidence_of
from .findings import crossover_sentence, data_size_curves, headline, interval_text, points_text, similarity_view
from .markup import code_tag, esc, fmt_number, fmt_points
from .plain import plain_paragraph, size_story
from .roles import BASELINE

VERDICT_WORDS = {A_BETTER: "better", B_BETTER: "worse"}
VERDICT_CLASS = {A_BETTER: "num pos", B_BETTER: "num neg"}


def summary_section(result: Mapping[str, Any], benefit: Mapping[str, Any] | None) -> str:
    parts = []
    head = headline(result)
    if head:
        parts.append(f'<p class="headline">{esc(head)}</p>')
    plain = plain_paragraph(result, significance_of(result), size_evidence_of(result))
    if plain:
        parts.append(f'<p class="plain">{esc(plain)}</p>')
    elif result.get("strategies"):
        parts.append('<p class="muted">This result records no per-image predictions, so its numbers are single '
                     "draws without intervals and no difference between strategies is tested. Re-run "
                     "<code>transferkit compare --repeats 3</code> for intervals and tested differences.</p>")
    if benefit:
        for name in benefit.get("negative_transfer", []):
            row = benefit["strategies"][name]
            parts.append(f'<p class="callout neg">{esc(row["summary"])}</p>')
    advisor = result.get("advisor") or {}
    if advisor:
        rec = []
        if advisor.get("strategy"):
            rec.append(f"<strong>{esc(advisor['strategy'])}</strong>")
        if advisor.get("layer"):
            rec.append(f"cut at {code_tag(advisor['layer'])}")
        if advisor.get("frozen_stages") is not None:
            rec.append(f"{esc(advisor['frozen_stages'])} stage(s) frozen")
        body = f"<p>The advisor recommends {', '.join(rec)}.</p>" if rec else ""
        reasons = advisor.get("reasons") or []
        if reasons:
            body += "<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>"
        if advisor.get("table_rule"):
            body += f'<p class="muted">Rule applied: {esc(advisor["table_rule"])}</p>'
        sim = similarity_view(advisor)
        if sim["summary"]:
            body += f'<p class="muted">Similarity: {esc(sim["summary"])}</p>'
        if sim["notes"]:
            body += '<ul class="muted">' + "".join(f"<li>{esc(n)}</li>" for n in sim["notes"]) + "</ul>"
        if body:
            parts.append(f'<div class="card"><h3>Advisor</h3>{body}</div>')
    text = crossover_sentence(data_size_curves(result))
    if text:
        parts.append(f"<p>Data size: {esc(text)}</p>")
    if not parts:
        return ""
    return '<section id="summary"><h2>Summary</h2>' + "".join(parts) + "</section>"


def _points_interval(stat: Mapping[str, Any]) -> str:
    """A mean difference over draws in signed points, ``+5.0 [+2.1, +7.9]`` (no interval from one draw)."""
    mean, low, high = (100 * stat[k] if is_finite(stat.get(k)) else None for k in ("mean", "low", "high"))
    if mean is None:
        return "—"
    return f"{mean:+.1f}" + (f" [{low:+.1f}, {high:+.1f}]" if low is not None and high is not None else "")


def benefit_section(benefit: Mapping[str, Any] | None, result: Mapping[str, Any] | None = None) -> str:
    if not benefit or not benefit.get("strategies"):
        return ""
    base = benefit.get("baseline", BASELINE)
    metric = benefit.get("metric", "monitor_acc")
    head = (
        "<tr><th>strategy</th><th>start</th><th>Δ start</th><th>slope (points/epoch)</th><th>Δ slope</th>"
        "<th>AUC</th><th>Δ AUC</th><th>asymptote</th><th>Δ asymptote</th><th>epochs</th></tr>"
    )
    rows = []
    for name, r in benefit["strategies"].items():
        d = r.get("delta") or {}
        cls = ' class="negrow"' if r.get("negative_transfer") else ""
        cells = [f"<td>{esc(name)}{' (baseline)' if name == base else ''}</td>"]
        for key in ("start", "slope", "auc", "asymptote"):
            value = r.get(key)
            shown = fmt_points(value) if key == "slope" else fmt_number(value)
            if key == "slope" and r.get("single_fit"):
                shown = "0 (one fit)"
            cells.append(f'<td class="num">{shown}</td>')
            # untested differences of one learning curve: shown, never coloured as a win or a loss
            cells.append(f'<td class="num">{fmt_points(d.get(key))}</td>')
        cells.append(f'<td class="num">{esc(r.get("epochs", ""))}</td>')
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    over = curve_benefit_over_draws(result) if result is not None else None
    over_table = ""
    if over:
        draws = len(((result.get("strategies") or {}).get(base) or {}).get("draws") or [])
        cells = "".join(
            f"<tr><td>{esc(name)}</td>"
            + "".join(f'<td class="num">{esc(_points_interval(row[k]))}</td>' for k in ("start", "slope", "asymptote"))
            + "</tr>"
            for name, row in over.items()
        )
        over_table = (
            f"<h3>Over {draws} draws (paired with {esc(base)}'s draw of the same seed)</h3>"
            f'<p class="muted">Mean difference in points, 95% bootstrap interval over the draws (few draws give '
            "a rough interval).</p>"
            f'<div class="scroll"><table><tr><th>strategy − {esc(base)}</th><th>Δ start</th>'
            f"<th>Δ slope (points/epoch)</th><th>Δ asymptote</th></tr>{cells}</table></div>"
        )
    sentences = "".join(
        ('<li class="neg">' if r.get("negative_transfer") else "<li>") + esc(r.get("summary", "")) + "</li>"
        for r in benefit["strategies"].values()
    )
    defs = benefit.get("definitions") or DEFINITIONS
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in defs.items())
    fallback = sorted({r.get("metric") for r in benefit["strategies"].values()} - {metric})
    note = f" (read from {esc(', '.join(map(str, fallback)))} where {esc(metric)} was not recorded)" if fallback else ""
    skipped = benefit.get("skipped") or {}
    skip = (
        '<p class="muted">Not in the table: ' + "; ".join(f"{esc(k)} ({esc(v)})" for k, v in skipped.items()) + "</p>"
        if skipped
        else ""
    )
    return (
        '<section id="benefit"><h2>Learning curves: start, slope and asymptote per epoch</h2>'
        f'<p class="muted">From each strategy\'s first draw ({esc(metric)}{note}), untested: the paired tests are in '
        "the tables above; start, AUC and asymptote are accuracies, "
        f"slope and every Δ are in points (1 point = 0.01 accuracy); Δ = strategy − {esc(base)}.</p>"
        f'<ul class="sentences">{sentences}</ul>'
        f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>{over_table}{skip}'
        f"<details open><summary>Definitions</summary><dl>{dl}</dl></details></section>"
    )


def metrics_section(result: Mapping[str, Any], best: str | None) -> str:
    strategies = result.get("strategies") or {}
    if not strategies:
        return ""
    split = result.get("split") or {}
    scored = f" on {esc(split['scored'])}" if split.get("scored") else ""
    sig = significance_of(result) or {}
    summary = sig.get("summary") or {}
    vs = sig.get("vs_baseline") or {}
    top_group = set((sig.get("best") or {}).get("top_group") or ([best] if best else []))
    head = (
        "<tr><th>strategy</th><th>accuracy [95% interval]</th><th>balanced accuracy [95% interval]</th>"
        f"<th>vs {esc(BASELINE)}: points [95% interval]</th><th>macro F1</th><th>train seconds</th>"
        "<th>epochs</th></tr>"
    )
    rows = []
    for name, s in strategies.items():
        s = s or {}
        m = s.get("metrics") or {}
        mark = ' class="best"' if name in top_group else ""
        acc = (summary.get(name) or {}).get("accuracy") or _recorded(m, "accuracy")
        bal = (summary.get(name) or {}).get("balanced_accuracy") or _recorded(m, "balanced_accuracy")
        d = vs.get(name)
        verdict = "—" if not d else (f"{points_text(d).replace(' points', '')} "
                                     f"{VERDICT_WORDS.get(d['decision'], 'no measurable difference')}")
        rows.append(
            f"<tr{mark}><td>{esc(name)}{' ★' if name in top_group else ''}</td>"
            f'<td class="num">{esc(interval_text(acc))}</td>'
            f'<td class="num">{esc(interval_text(bal))}</td>'
            f'<td class="{VERDICT_CLASS.get(d["decision"], "num") if d else "num"}">{esc(verdict)}</td>'
            f'<td class="num">{fmt_number(m.get("macro_f1"))}</td>'
            f'<td class="num">{fmt_number(s.get("seconds"), 1)}</td>'
            f'<td class="num">{len(s.get("history") or []) or "—"}</td></tr>'
        )
    out = (
        f'<section id="metrics"><h2>Strategies{scored}</h2>{_interval_note(result, summary)}'
        f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'
    )
    per_class = ((strategies.get(best) or {}).get("metrics") or {}).get("per_class") if best else None
    if per_class:
        prow = []
        for cls, v in per_class.items():
            v = v or {}
            prow.append(
                f'<tr><td>{esc(cls)}</td><td class="num">{fmt_number(v.get("precision"))}</td>'
                f'<td class="num">{fmt_number(v.get("recall"))}</td><td class="num">{fmt_number(v.get("f1"))}</td>'
                f'<td class="num">{esc(v.get("support", "—"))}</td></tr>'
            )
        out += (
            f'<h3>Per class — {esc(best)}</h3><div class="scroll"><table><tr><th>class</th><th>precision</th>'
            f"<th>recall</th><th>F1</th><th>support</th></tr>{''.join(prow)}</table></div>"
        )
    return out + "</section>"


def _recorded(metrics: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """``{"mean", "low", "high"}`` from a run's metrics (no interval in runs written before it existed)."""
    if metrics.get(key) is None:
        return None
    bounds = metrics.get(f"{key}_interval") or [None, None]
    return {"mean": metrics[key], "low": bounds[0], "high": bounds[1]}


def _interval_note(result: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    if not summary:
        return '<p class="muted">One draw; no per-image predictions recorded, so no differences are tested.</p>'
    repeats = result.get("repeats") or 1
    method = next(iter(summary.values()))["accuracy"]["method"]
    return (f'<p class="muted">{"Mean of " + str(repeats) + " draws; " if repeats > 1 else ""}'
            f"95% intervals: {esc(method)}. ★: the best strategy and every strategy not measurably worse than it. "
            "A difference is called only when its paired 95% interval excludes zero and the exact test agrees.</p>")


def data_size_table(result: Mapping[str, Any]) -> str:
    curves = data_size_curves(result)
    if not curves:
        return ""
    ev = size_evidence_of(result) or {}
    all_n = ev.get("all_per_class")
    points = ev.get("points") or {}

    def cell(name: str, n: int) -> str:
        key = "all" if n == all_n and "all" in points.get(name, {}) else str(n)
        stat = (points.get(name) or {}).get(key)
        return esc(interval_text(stat["accuracy"])) if stat else fmt_number(curves[name].get(n))

    sizes = sorted({n for c in curves.values() for n in c})
    head = "<tr><th>images / class</th>" + "".join(f"<th>{esc(n)}</th>" for n in curves) + "</tr>"
    rows = "".join(
        f'<tr><td class="num">{n}{" (all)" if all_n is not None and n == all_n else ""}</td>'
        + "".join(f'<td class="num">{cell(name, n)}</td>' for name in curves)
        + "</tr>"
        for n in sizes
    )
    return f'<h3>Data-size numbers</h3><div class="scroll"><table>{head}{rows}</table></div>'


def size_benefit_section(result: Mapping[str, Any]) -> str:
    """Start, slope and asymptote of transfer over the baseline, read from the repeated data-size curves."""
    ev = size_evidence_of(result) or {}
    benefit = ev.get("benefit") or {}
    if not benefit:
        return ""
    rows = []
    for name, b in benefit.items():
        cells = [f"<td>{esc(name)}</td>"]
        for key in ("start", "slope", "asymptote"):
            d = b.get(key)
            if not d:
                cells.append('<td class="num">—</td>')
                continue
            word = {A_BETTER: "transfer better", B_BETTER: f"{BASELINE} better"}.get(
                d["decision"], "no measurable difference")
            cells.append(f'<td class="{VERDICT_CLASS.get(d["decision"], "num")}">{esc(points_text(d))}'
                         f'<br><span class="muted">{esc(word)}</span></td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    small = (next(iter(benefit.values())).get("start") or {}).get("size")
    head = (f"<tr><th>strategy − {esc(BASELINE)}</th><th>start ({esc(small)} images / class)</th>"
            "<th>slope (per doubling of images)</th><th>asymptote (all images)</th></tr>")
    story = size_story(ev)
    return (
        '<section id="size-benefit"><h2>What transfer buys, by amount of data</h2>'
        + (f"<p>{esc(story)}</p>" if story else "")
        + '<p class="muted">Paired differences read from the data-size curves, in points (1 point = 0.01 accuracy), '
        "with 95% intervals over draws and scored images. Start: with the fewest images; slope: the difference in "
        "gain per doubling of training images; asymptote: with all images.</p>"
        f'<div class="scroll"><table>{head}{"".join(rows)}</table></div></section>'
    )


def params_section(result: Mapping[str, Any]) -> str:
    rows = [(name, s.get("params")) for name, s in (result.get("strategies") or {}).items() if s and s.get("params")]
    if not rows:
        return ""
    items = "".join(
        f"<tr><td>{esc(name)}</td><td>" + ", ".join(f"{esc(k)}={esc(v)}" for k, v in params.items()) + "</td></tr>"
        for name, params in rows
    )
    return (
        '<h3>Strategy parameters</h3><div class="scroll"><table>'
        "<tr><th>strategy</th><th>parameters</th></tr>"
        f"{items}</table></div>"
    )
