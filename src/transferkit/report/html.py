"""One self-contained ``report.html`` (plus the PNG files) from a run's result dict.

``write_report(result, out_dir, misclassified_images=None) -> Path`` draws every figure the
result has data for into ``out_dir/plots/*.png`` and writes ``out_dir/report.html``. The page
embeds each PNG as a base64 ``data:`` URI and its CSS inline: it opens from disk with no server,
no script and no external CSS, JS or fonts. Every string taken from ``result`` is escaped.

The ``result`` schema
=====================
Every key is optional; a section whose data is missing is left out (an empty dict gives a
page that says so). Accuracies are fractions in [0, 1]. Mappings keep their insertion order.

``title``: str
    Page title. Default "transferkit report".
``backbone``: dict
    ``name`` (str), ``spec`` (str, what the user passed), ``weights_hash`` (str),
    ``pretrained`` (bool), ``input_size`` (list[int]); other keys are listed as given.
``data``: dict
    ``path`` (str), ``name`` (str), ``fingerprint`` (str), ``n_images`` (int),
    ``classes`` (list[str], index order), ``counts`` ({class: int} images per class, or
    {split: {class: int}}), ``skipped`` (int, unreadable images left out).
``split``: dict
    ``train`` (str: what the models were trained on, e.g. "train split minus 15% val"),
    ``scored`` (str: the split every reported metric is computed on, e.g. "test"),
    ``origin`` (str: how the split was made, ``ImageDataset.split_origin``),
    ``n_train`` (int), ``n_scored`` (int), ``val`` (str, optional: what chose the epoch).
``seed``: int
``versions``: {package: version str}, e.g. python, torch, timm, transferkit, sklearn.
``command``: str or list[str] (the command line; a list is shell-quoted).
``created``: str (ISO 8601 date-time).
``budget``: {name: value} (optional, e.g. ``epochs``), listed with the run.
``strategies``: {name: dict} in display order, each with
    ``metrics``: {``accuracy``, ``balanced_accuracy``, ``macro_f1``: float,
    ``per_class``: {class: {``precision``, ``recall``, ``f1``: float, ``support``: int}},
    ``confusion_matrix``: list[list[int]] (rows true, columns predicted, ``data.classes`` order)},
    ``history``: list of per-epoch dicts (``epoch``, ``train_loss``, ``val_loss``, ``val_acc``,
    ``monitor_acc``, ...; one entry for a strategy fitted in one go),
    ``seconds``: float (training wall time), ``params``: dict (optional, shown as given).
``benefit``: the output of ``transfer_benefit``. When absent it is computed from the
    strategies' histories (baseline ``scratch``).
``data_size``: {strategy: {images per class (int or int-like str): accuracy}}. A key ``"all"``
    stands for the whole training set and is placed at the largest per-class count in
    ``data.counts`` (dropped when that is unknown).
``advisor``: dict
    ``strategy`` (str), ``layer`` (str), ``frozen_stages`` (int), ``reasons`` (list[str]),
    ``table_rule`` (str: the size x similarity rule that applied),
    ``similarity``: {``summary`` (str), ``signals`` ({name: float}),
    ``per_layer`` ({layer: {``probe_acc``: float, ``bn_similarity``: float}}, shallow -> deep)}.
    ``Similarity.to_dict()`` from ``transferkit.advisor.similarity`` is read as well: ``layers``
    (list of {``layer``, ``probe_acc``, ``bn_similarity``}) stands for ``per_layer``, and without
    a ``summary`` one is made from ``score`` / ``similar``; its ``definition`` and ``notes`` are shown.
``best_strategy``: str. Default: the strategy with the highest ``metrics.accuracy``.

``misclassified_images`` (keyword argument, not JSON): {``images``: uint8 array (N,3,H,W) or
(N,H,W,3), ``true``: sequence of class indices or names, ``pred``: same, ``strategy``: str
(optional; default the best strategy)}. Up to 24 are drawn.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import shlex
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, TransferkitError
from ..io import atomic_write_text
from . import plots
from .benefit import DEFINITIONS, _finite, _int_keys, crossover, pick_pair, transfer_benefit

_PLOT_ERRORS = (TransferkitError, ValueError, TypeError, KeyError, IndexError)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "—"


def _pts(value: Any) -> str:
    return f"{100.0 * value:+.1f}" if _finite(value) else "—"


def _signed_class(value: Any) -> str:
    if not _finite(value):
        return ""
    return ' class="pos"' if value > 0 else (' class="neg"' if value < 0 else "")


def _accuracy(result: Mapping[str, Any], name: str) -> float | None:
    acc = (result.get("strategies", {}).get(name) or {}).get("metrics", {}).get("accuracy")
    return float(acc) if _finite(acc) else None


def best_strategy(result: Mapping[str, Any]) -> str | None:
    """``result['best_strategy']`` when it names a strategy, else the one with the highest accuracy."""
    strategies = result.get("strategies") or {}
    named = result.get("best_strategy")
    if named in strategies:
        return named
    scored = [(acc, name) for name in strategies if (acc := _accuracy(result, name)) is not None]
    return max(scored)[1] if scored else None


def headline(result: Mapping[str, Any]) -> str | None:
    """One sentence: the best strategy, where it was scored, and what transfer bought over scratch."""
    best = best_strategy(result)
    if best is None:
        return None
    acc = _accuracy(result, best)
    split = result.get("split") or {}
    where = ""
    if split.get("scored"):
        where = f" on {split['scored']}"
        if split.get("n_scored") is not None:
            where += f" ({split['n_scored']} images)"
    text = f"Best: {best} {_num(acc, 2)}{where}"
    scratch = _accuracy(result, "scratch")
    if best == "scratch":
        others = [
            (a, n) for n in result.get("strategies", {}) if n != "scratch" and (a := _accuracy(result, n)) is not None
        ]
        if others:
            a, n = max(others)
            return (
                text + f" — transfer did not help: the best pretrained strategy, {n}, scored {_num(a, 2)} "
                f"({100 * (a - acc):+.0f} points)"
            )
        return text
    if scratch is None or acc is None:
        return text + " (no scratch baseline was run)"
    gain = 100.0 * (acc - scratch)
    verb = "bought" if gain >= 0 else "cost"
    return text + f" vs scratch {_num(scratch, 2)} — transfer {verb} {gain:+.0f} points"


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows if v not in (None, ""))
    return f'<table class="kv">{body}</table>' if body else ""


def _code(value: Any) -> str:
    return f"<code>{_e(value)}</code>"


def _data_size_curves(result: Mapping[str, Any]) -> dict[str, dict[int, float]]:
    counts = (result.get("data") or {}).get("counts") or {}
    flat = counts
    if counts and all(isinstance(v, Mapping) for v in counts.values()):
        flat = counts.get("train") or next(iter(counts.values()))
    all_n = max((int(v) for v in flat.values() if _finite(v)), default=None) if flat else None
    curves: dict[str, dict[int, float]] = {}
    for name, curve in (result.get("data_size") or {}).items():
        if not isinstance(curve, Mapping):
            continue
        c = _int_keys(curve)
        if "all" in curve and all_n and _finite(curve["all"]):
            c.setdefault(all_n, float(curve["all"]))
        if c:
            curves[str(name)] = dict(sorted(c.items()))
    return curves


def _similarity(advisor: Mapping[str, Any]) -> dict[str, Any]:
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
    if not summary and _finite(sim.get("score")):
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


def _crossover_sentence(curves: Mapping[str, Mapping[int, float]]) -> str | None:
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


class _Figures:
    """Draws figures, keeps (section, html) pairs and the reasons a figure was not drawn."""

    def __init__(self, plot_dir: Path) -> None:
        self.plot_dir = plot_dir
        self.items: dict[str, str] = {}
        self.paths: dict[str, Path] = {}
        self.failed: list[tuple[str, str]] = []

    def draw(self, key: str, title: str, caption: str, fn, /, *args, **kwargs) -> None:
        path = self.plot_dir / f"{key}.png"
        try:
            fn(*args, path=path, **kwargs)
        except _PLOT_ERRORS as exc:
            warnings.warn(f"report figure {key!r} not drawn: {exc}", stacklevel=3)
            self.failed.append((title, f"{type(exc).__name__}: {exc}"))
            return
        self.paths[key] = path
        self.items[key] = (
            f'<figure id="fig-{_e(key)}">{_img_tag(path, title)}'
            f"<figcaption><strong>{_e(title)}.</strong> {caption}</figcaption></figure>"
        )


def _draw_figures(
    result: Mapping[str, Any],
    benefit: Mapping[str, Any] | None,
    best: str | None,
    out_dir: Path,
    misclassified_images: Mapping[str, Any] | None,
) -> _Figures:
    figs = _Figures(out_dir / "plots")
    strategies = result.get("strategies") or {}
    classes = (result.get("data") or {}).get("classes")
    histories = {n: s.get("history") for n, s in strategies.items() if s and s.get("history")}
    metric = (benefit or {}).get("metric", "monitor_acc")
    if histories:
        figs.draw(
            "learning_curves",
            "Learning curves",
            f"Left: accuracy per epoch ({_e(metric)}; held-out data, never used to choose anything) for "
            "every "
            "strategy; right: training loss. Scratch (random initialisation) is dashed; a strategy fitted in "
            "one go is a dotted line at its accuracy.",
            plots.plot_learning_curves,
            histories,
            metric=metric,
        )
    if benefit and any(r.get("delta") for r in benefit.get("strategies", {}).values()):
        figs.draw(
            "benefit",
            "Transfer benefit",
            f"Start, slope and asymptote of each strategy minus "
            f"{_e(benefit.get('baseline', 'scratch'))}'s, in "
            "points (1 point = 0.01 accuracy). Red bars: the pretrained strategy is worse.",
            plots.plot_benefit,
            benefit,
        )
    curves = _data_size_curves(result)
    if curves:
        text = _crossover_sentence(curves)
        where = f" {_e(text)}" if text else ""
        figs.draw(
            "data_size",
            "Data-size curves",
            "Accuracy against training images per class (log scale), each model retrained on a stratified "
            "subset." + where,
            plots.plot_data_size,
            curves,
        )
    advisor = result.get("advisor") or {}
    similarity = _similarity(advisor)
    per_layer = similarity["per_layer"]
    if per_layer:
        figs.draw(
            "layer_profile",
            "Per-layer profile",
            "Bars: accuracy of a linear probe on features cut at each layer (shallow to deep). Line: how "
            "closely this data's activation statistics match the backbone's source data at that layer.",
            plots.plot_layer_profile,
            per_layer,
        )
    signals = similarity["signals"]
    if signals:
        figs.draw(
            "similarity",
            "Similarity signals",
            "The advisor's measurements of how similar this data is to the backbone's source data."
            + (f" {_e(similarity['definition'])}" if similarity.get("definition") else ""),
            plots.plot_similarity,
            signals,
        )
    if best:
        cm = (strategies.get(best) or {}).get("metrics", {}).get("confusion_matrix")
        if cm:
            figs.draw(
                "confusion",
                f"Confusion matrix ({best})",
                f"Rows: true class, columns: predicted class, for {_e(best)} on the scored split. Colour: "
                "fraction of the true class; numbers: image counts.",
                plots.plot_confusion,
                cm,
                classes,
                title=f"Confusion matrix — {best}",
            )
    if misclassified_images is not None:
        who = misclassified_images.get("strategy") or best or ""
        figs.draw(
            "misclassified",
            "Misclassified images",
            f"Up to 24 images from the scored split that {_e(who)} got wrong, captioned true → predicted.",
            plots.plot_misclassified,
            misclassified_images.get("images"),
            misclassified_images.get("true", []),
            misclassified_images.get("pred", []),
            classes=classes,
        )
    return figs


# --------------------------------------------------------------------------- sections


def _summary(result: Mapping[str, Any], benefit: Mapping[str, Any] | None) -> str:
    parts = []
    head = headline(result)
    if head:
        parts.append(f'<p class="headline">{_e(head)}</p>')
    if benefit:
        for name in benefit.get("negative_transfer", []):
            row = benefit["strategies"][name]
            parts.append(f'<p class="callout neg">{_e(row["summary"])}</p>')
    advisor = result.get("advisor") or {}
    if advisor:
        rec = []
        if advisor.get("strategy"):
            rec.append(f"<strong>{_e(advisor['strategy'])}</strong>")
        if advisor.get("layer"):
            rec.append(f"cut at {_code(advisor['layer'])}")
        if advisor.get("frozen_stages") is not None:
            rec.append(f"{_e(advisor['frozen_stages'])} stage(s) frozen")
        body = f"<p>The advisor recommends {', '.join(rec)}.</p>" if rec else ""
        reasons = advisor.get("reasons") or []
        if reasons:
            body += "<ul>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>"
        if advisor.get("table_rule"):
            body += f'<p class="muted">Rule applied: {_e(advisor["table_rule"])}</p>'
        sim = _similarity(advisor)
        if sim["summary"]:
            body += f'<p class="muted">Similarity: {_e(sim["summary"])}</p>'
        if sim["notes"]:
            body += '<ul class="muted">' + "".join(f"<li>{_e(n)}</li>" for n in sim["notes"]) + "</ul>"
        if body:
            parts.append(f'<div class="card"><h3>Advisor</h3>{body}</div>')
    text = _crossover_sentence(_data_size_curves(result))
    if text:
        parts.append(f"<p>Data size: {_e(text)}</p>")
    if not parts:
        return ""
    return '<section id="summary"><h2>Summary</h2>' + "".join(parts) + "</section>"


def _benefit_section(benefit: Mapping[str, Any] | None) -> str:
    if not benefit or not benefit.get("strategies"):
        return ""
    base = benefit.get("baseline", "scratch")
    metric = benefit.get("metric", "monitor_acc")
    head = (
        "<tr><th>strategy</th><th>start</th><th>Δ start</th><th>slope (points/epoch)</th><th>Δ slope</th>"
        "<th>AUC</th><th>Δ AUC</th><th>asymptote</th><th>Δ asymptote</th><th>epochs</th></tr>"
    )
    rows = []
    for name, r in benefit["strategies"].items():
        d = r.get("delta") or {}
        cls = ' class="negrow"' if r.get("negative_transfer") else ""
        cells = [f"<td>{_e(name)}{' (baseline)' if name == base else ''}</td>"]
        for key in ("start", "slope", "auc", "asymptote"):
            value = r.get(key)
            shown = _pts(value) if key == "slope" else _num(value)
            if key == "slope" and r.get("single_fit"):
                shown = "0 (one fit)"
            cells.append(f'<td class="num">{shown}</td>')
            cells.append(f'<td class="num"{_signed_class(d.get(key))}>{_pts(d.get(key))}</td>')
        cells.append(f'<td class="num">{_e(r.get("epochs", ""))}</td>')
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    sentences = "".join(
        ('<li class="neg">' if r.get("negative_transfer") else "<li>") + _e(r.get("summary", "")) + "</li>"
        for r in benefit["strategies"].values()
    )
    defs = benefit.get("definitions") or DEFINITIONS
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in defs.items())
    fallback = sorted({r.get("metric") for r in benefit["strategies"].values()} - {metric})
    note = f" (read from {_e(', '.join(map(str, fallback)))} where {_e(metric)} was not recorded)" if fallback else ""
    skipped = benefit.get("skipped") or {}
    skip = (
        '<p class="muted">Not in the table: ' + "; ".join(f"{_e(k)} ({_e(v)})" for k, v in skipped.items()) + "</p>"
        if skipped
        else ""
    )
    return (
        '<section id="benefit"><h2>What transfer bought</h2>'
        f'<p class="muted">From the learning curves ({_e(metric)}{note}); '
        "start, AUC and asymptote are accuracies, "
        f"slope and every Δ are in points (1 point = 0.01 accuracy); Δ = strategy − {_e(base)}.</p>"
        f'<ul class="sentences">{sentences}</ul>'
        f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>{skip}'
        f"<details open><summary>Definitions</summary><dl>{dl}</dl></details></section>"
    )


def _metrics_section(result: Mapping[str, Any], best: str | None) -> str:
    strategies = result.get("strategies") or {}
    if not strategies:
        return ""
    split = result.get("split") or {}
    scored = f" on {_e(split['scored'])}" if split.get("scored") else ""
    head = (
        "<tr><th>strategy</th><th>accuracy</th><th>balanced accuracy</th><th>macro F1</th>"
        "<th>train seconds</th><th>epochs</th></tr>"
    )
    rows = []
    for name, s in strategies.items():
        s = s or {}
        m = s.get("metrics") or {}
        mark = ' class="best"' if name == best else ""
        secs = s.get("seconds")
        rows.append(
            f"<tr{mark}><td>{_e(name)}{' ★' if name == best else ''}</td>"
            f'<td class="num">{_num(m.get("accuracy"))}</td>'
            f'<td class="num">{_num(m.get("balanced_accuracy"))}</td>'
            f'<td class="num">{_num(m.get("macro_f1"))}</td>'
            f'<td class="num">{_num(secs, 1)}</td>'
            f'<td class="num">{len(s.get("history") or []) or "—"}</td></tr>'
        )
    out = (
        f'<section id="metrics"><h2>Strategies{scored}</h2><div class="scroll"><table>{head}{"".join(rows)}'
        "</table></div>"
    )
    per_class = ((strategies.get(best) or {}).get("metrics") or {}).get("per_class") if best else None
    if per_class:
        prow = []
        for cls, v in per_class.items():
            v = v or {}
            prow.append(
                f'<tr><td>{_e(cls)}</td><td class="num">{_num(v.get("precision"))}</td>'
                f'<td class="num">{_num(v.get("recall"))}</td><td class="num">{_num(v.get("f1"))}</td>'
                f'<td class="num">{_e(v.get("support", "—"))}</td></tr>'
            )
        out += (
            f'<h3>Per class — {_e(best)}</h3><div class="scroll"><table><tr><th>class</th><th>precision</th>'
            f"<th>recall</th><th>F1</th><th>support</th></tr>{''.join(prow)}</table></div>"
        )
    return out + "</section>"


def _data_size_table(result: Mapping[str, Any]) -> str:
    curves = _data_size_curves(result)
    if not curves:
        return ""
    sizes = sorted({n for c in curves.values() for n in c})
    head = "<tr><th>images / class</th>" + "".join(f"<th>{_e(n)}</th>" for n in curves) + "</tr>"
    rows = "".join(
        f'<tr><td class="num">{n}</td>'
        + "".join(f'<td class="num">{_num(c.get(n))}</td>' for c in curves.values())
        + "</tr>"
        for n in sizes
    )
    return f'<h3>Data-size numbers</h3><div class="scroll"><table>{head}{rows}</table></div>'


def _counts_html(counts: Mapping[str, Any]) -> str:
    if not counts:
        return ""
    if all(isinstance(v, Mapping) for v in counts.values()):
        return "<br>".join(f"{_e(split)}: {_counts_html(c)}" for split, c in counts.items())
    return ", ".join(f"{_e(k)} {_e(v)}" for k, v in counts.items())


def _provenance(result: Mapping[str, Any]) -> str:
    sections = []
    bb = result.get("backbone") or {}
    if bb:
        known = ["name", "spec", "weights_hash", "pretrained", "input_size"]
        rows = [
            (k.replace("_", " "), _code(bb[k]) if k in ("spec", "weights_hash") else _e(_plain(bb[k])))
            for k in known
            if k in bb
        ]
        rows += [(k.replace("_", " "), _e(v)) for k, v in bb.items() if k not in known]
        sections.append("<h3>Backbone</h3>" + _kv_table(rows))
    data = result.get("data") or {}
    if data:
        classes = data.get("classes")
        rows = [
            ("name", _e(data["name"]) if data.get("name") else None),
            ("path", _code(data["path"]) if data.get("path") else None),
            ("fingerprint", _code(data["fingerprint"]) if data.get("fingerprint") else None),
            ("images", _e(data["n_images"]) if data.get("n_images") is not None else None),
            ("classes", f"{len(classes)}: " + ", ".join(_e(c) for c in classes) if classes else None),
            ("images per class", _counts_html(data.get("counts") or {})),
            ("skipped (unreadable)", _e(data["skipped"]) if data.get("skipped") else None),
        ]
        sections.append("<h3>Data</h3>" + _kv_table(rows))
    split = result.get("split") or {}
    if split:
        rows = [
            (
                "trained on",
                _e(split["train"]) + (f" ({_e(split['n_train'])} images)" if split.get("n_train") is not None else "")
                if split.get("train")
                else None,
            ),
            ("model selection", _e(split["val"]) if split.get("val") else None),
            (
                "scored on",
                _e(split["scored"])
                + (f" ({_e(split['n_scored'])} images)" if split.get("n_scored") is not None else "")
                if split.get("scored")
                else None,
            ),
            ("how the split was made", _code(split["origin"]) if split.get("origin") else None),
        ]
        sections.append("<h3>Split</h3>" + _kv_table(rows))
    run_rows = [
        ("seed", _e(result["seed"]) if result.get("seed") is not None else None),
        ("command", _code(_command(result["command"])) if result.get("command") else None),
        ("date", _e(result["created"]) if result.get("created") else None),
    ]
    budget = result.get("budget")
    if isinstance(budget, Mapping):
        run_rows += [(f"budget: {k}", _e(v)) for k, v in budget.items() if v is not None]
    run = _kv_table(run_rows)
    if run:
        sections.append("<h3>Run</h3>" + run)
    versions = result.get("versions") or {}
    if versions:
        sections.append("<h3>Versions</h3>" + _kv_table([(k, _e(v)) for k, v in versions.items()]))
    if not sections:
        return ""
    return (
        '<section id="provenance"><h2>Provenance</h2><div class="grid">'
        + "".join(f'<div class="card">{s}</div>' for s in sections)
        + "</div></section>"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return " × ".join(str(v) for v in value)
    return value


def _command(command: Any) -> str:
    if isinstance(command, list | tuple):
        return shlex.join(str(c) for c in command)
    return str(command)


def _params_section(result: Mapping[str, Any]) -> str:
    rows = [(name, s.get("params")) for name, s in (result.get("strategies") or {}).items() if s and s.get("params")]
    if not rows:
        return ""
    items = "".join(
        f"<tr><td>{_e(name)}</td><td>" + ", ".join(f"{_e(k)}={_e(v)}" for k, v in params.items()) + "</td></tr>"
        for name, params in rows
    )
    return (
        '<h3>Strategy parameters</h3><div class="scroll"><table>'
        "<tr><th>strategy</th><th>parameters</th></tr>"
        f"{items}</table></div>"
    )


CSS = """
:root { --fg:#1d232a; --muted:#5f6b76; --line:#dde3e8; --bg:#ffffff; --soft:#f5f7f9;
        --pos:#2e7d32; --neg:#c0392b; --accent:#2f6db5; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--fg);
       font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 28px 60px; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 18px; padding-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 8px; }
p { margin: 8px 0; }
.muted, .subtitle { color: var(--muted); font-size: 13.5px; }
.headline { font-size: 19px; font-weight: 600; background: var(--soft); border-left: 5px solid var(--accent);
            padding: 12px 16px; margin: 12px 0; }
.callout { padding: 10px 14px; border-radius: 4px; font-weight: 600; }
.callout.neg { background: #fdecea; color: var(--neg); border-left: 5px solid var(--neg); }
.card { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 6px 16px 10px;
        margin: 12px 0; min-width: 0; }
.card h3 { margin-top: 10px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 0 16px; }
nav { font-size: 13.5px; margin: 6px 0 0; }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td { background: #eaf3ea; font-weight: 600; }
tr.negrow td { background: #fdecea; }
table.kv { font-size: 13.5px; width: 100%; table-layout: fixed; }
table.kv th { width: 34%; background: none; color: var(--muted); font-weight: 500; white-space: normal; }
table.kv td { overflow-wrap: anywhere; }
.pos { color: var(--pos); } .neg { color: var(--neg); }
ul.sentences li { margin: 3px 0; }
li.neg { font-weight: 600; }
code { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #eef1f4;
       padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
details summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 14px; font-size: 13.5px; margin: 6px 0; }
dt { font-weight: 600; } dd { margin: 0; color: var(--muted); }
figure { margin: 22px 0; padding: 12px; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 13.5px; color: var(--muted); margin-top: 8px; }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--line);
         padding-top: 8px; }
@media print { main { max-width: none; padding: 0; } figure { break-inside: avoid; } }
"""


def render_html(
    result: Mapping[str, Any],
    figures: Mapping[str, str],
    failed: Sequence[tuple[str, str]] = (),
    benefit: Mapping[str, Any] | None = None,
) -> str:
    """The page as a string, from the result, the figures' ``<figure>`` HTML and the figures not drawn."""
    title = str(result.get("title") or "transferkit report")
    best = best_strategy(result)
    bb = (result.get("backbone") or {}).get("name")
    data = result.get("data") or {}
    sub = " · ".join(
        _e(x)
        for x in [
            f"backbone {bb}" if bb else None,
            f"data {data.get('name') or data.get('path')}" if data.get("name") or data.get("path") else None,
            f"seed {result['seed']}" if result.get("seed") is not None else None,
            result.get("created"),
        ]
        if x
    )
    body = [_summary(result, benefit), _benefit_section(benefit), _metrics_section(result, best)]
    fig_html = "".join(figures.values())
    ds_table = _data_size_table(result)
    if fig_html or ds_table or failed:
        not_drawn = (
            '<p class="muted">Not drawn: ' + "; ".join(f"{_e(t)} ({_e(r)})" for t, r in failed) + "</p>"
            if failed
            else ""
        )
        body.append(f'<section id="figures"><h2>Figures</h2>{fig_html}{ds_table}{not_drawn}</section>')
    body.append(_provenance(result))
    params = _params_section(result)
    if params:
        body.append(f'<section id="parameters"><h2>Parameters</h2>{params}</section>')
    content = "".join(b for b in body if b)
    if not content:
        content = '<p class="muted">This result holds no metrics, curves or provenance to report.</p>'
    links = [
        ("summary", "Summary"),
        ("benefit", "Benefit"),
        ("metrics", "Strategies"),
        ("figures", "Figures"),
        ("provenance", "Provenance"),
    ]
    nav = "".join(f'<a href="#{k}">{v}</a>' for k, v in links if f'id="{k}"' in content)
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    footnote = " Self-contained: figures are embedded; the PNG files are beside this page in plots/." if figures else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{_e(title)}</h1>"
        + (f'<div class="subtitle">{sub}</div>' if sub else "")
        + (f"<nav>{nav}</nav>" if nav else "")
        + f"</header>{content}"
        f"<footer>Generated by transferkit on {generated}.{footnote}</footer></main></body></html>\n"
    )


def write_report(
    result: Mapping[str, Any],
    out_dir: str | Path,
    *,
    misclassified_images: Mapping[str, Any] | None = None,
) -> Path:
    """Draw the figures into ``out_dir/plots/`` and write ``out_dir/report.html``; return its path.

    ``result`` follows the schema in this module's docstring; every section is optional.
    Figures that cannot be drawn from malformed data are named in the page (and warned about)
    instead of failing the whole report.
    """
    if not isinstance(result, Mapping):
        raise ConfigError(f"write_report expects the result as a dict; got {type(result).__name__}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    benefit = result.get("benefit")
    if not benefit:
        histories = {n: s.get("history") for n, s in (result.get("strategies") or {}).items() if s and s.get("history")}
        benefit = transfer_benefit(histories) if histories else None
    best = best_strategy(result)
    figs = _draw_figures(result, benefit, best, out_dir, misclassified_images)
    page = render_html(result, figs.items, figs.failed, benefit)
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return path
