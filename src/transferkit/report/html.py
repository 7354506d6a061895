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
    ``accuracy_interval``, ``balanced_accuracy_interval``: [low, high] (optional, 95%),
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
``repeats``: int (draws per strategy and data-size point; default 1).
``scored_labels``: list[int], the class index of each scored image, in the order the draws'
    ``pred`` lists use. With ``strategies[name]["draws"]`` (list of {``seed``, ``accuracy``,
    ``pred``: list[int]}) and ``data_size_draws`` ({strategy: {images per class: [pred lists]}}) it
    lets the report compute every interval and paired test (``report.evidence``); ``significance``
    and ``data_size_evidence`` are those, as compare recorded them. Without them the page shows
    single untested draws, flags nothing red, and says how to get intervals.
``data_size_all_per_class``: int, where the point "all" sits (the largest class of the training pool).
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

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import atomic_write_text
from .benefit import transfer_benefit
from .evidence import significance_of
from .figures import draw_figures
from .findings import best_strategy, headline
from .markup import esc
from .provenance import provenance_section
from .sections import (
    benefit_section,
    data_size_table,
    metrics_section,
    params_section,
    size_benefit_section,
    summary_section,
)

# best_strategy and headline are read from the result in findings; they are part of this module's API.
__all__ = ["CSS", "best_strategy", "headline", "render_html", "write_report"]


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
.plain { font-size: 16px; max-width: 80ch; }
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
        esc(x)
        for x in [
            f"backbone {bb}" if bb else None,
            f"data {data.get('name') or data.get('path')}" if data.get("name") or data.get("path") else None,
            f"seed {result['seed']}" if result.get("seed") is not None else None,
            result.get("created"),
        ]
        if x
    )
    body = [summary_section(result, benefit), metrics_section(result, best), size_benefit_section(result),
            benefit_section(benefit, result)]
    fig_html = "".join(figures.values())
    ds_table = data_size_table(result)
    if fig_html or ds_table or failed:
        not_drawn = (
            '<p class="muted">Not drawn: ' + "; ".join(f"{esc(t)} ({esc(r)})" for t, r in failed) + "</p>"
            if failed
            else ""
        )
        body.append(f'<section id="figures"><h2>Figures</h2>{fig_html}{ds_table}{not_drawn}</section>')
    body.append(provenance_section(result))
    params = params_section(result)
    if params:
        body.append(f'<section id="parameters"><h2>Parameters</h2>{params}</section>')
    content = "".join(b for b in body if b)
    if not content:
        content = '<p class="muted">This result holds no metrics, curves or provenance to report.</p>'
    links = [
        ("summary", "Summary"),
        ("metrics", "Strategies"),
        ("size-benefit", "By data size"),
        ("benefit", "Learning curves"),
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
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{esc(title)}</h1>"
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
    # Recomputed from the histories (a pure function of them) so that what is flagged red follows
    # the paired tests; a result written before the tests existed flags nothing.
    histories = {n: s.get("history") for n, s in (result.get("strategies") or {}).items() if s and s.get("history")}
    verdicts = (significance_of(result) or {}).get("vs_baseline")
    benefit = transfer_benefit(histories, verdicts=verdicts) if histories else result.get("benefit")
    best = best_strategy(result)
    figs = draw_figures(result, benefit, best, out_dir, misclassified_images)
    page = render_html(result, figs.items, figs.failed, benefit)
    path = out_dir / "report.html"
    atomic_write_text(path, page)
    return path
