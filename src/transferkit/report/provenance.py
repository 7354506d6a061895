"""The provenance section: backbone, data, split, run (seed, command, date, budget) and versions."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from .markup import code_tag, esc, kv_table


def _counts_html(counts: Mapping[str, Any]) -> str:
    if not counts:
        return ""
    if all(isinstance(v, Mapping) for v in counts.values()):
        return "<br>".join(f"{esc(split)}: {_counts_html(c)}" for split, c in counts.items())
    return ", ".join(f"{esc(k)} {esc(v)}" for k, v in counts.items())


def provenance_section(result: Mapping[str, Any]) -> str:
    sections = []
    bb = result.get("backbone") or {}
    if bb:
        known = ["name", "spec", "weights_hash", "pretrained", "input_size"]
        rows = [
            (k.replace("_", " "), code_tag(bb[k]) if k in ("spec", "weights_hash") else esc(_plain(bb[k])))
            for k in known
            if k in bb
        ]
        rows += [(k.replace("_", " "), esc(v)) for k, v in bb.items() if k not in known]
        sections.append("<h3>Backbone</h3>" + kv_table(rows))
    data = result.get("data") or {}
    if data:
        classes = data.get("classes")
        rows = [
            ("name", esc(data["name"]) if data.get("name") else None),
            ("path", code_tag(data["path"]) if data.get("path") else None),
            ("fingerprint", code_tag(data["fingerprint"]) if data.get("fingerprint") else None),
            ("images", esc(data["n_images"]) if data.get("n_images") is not None else None),
            ("classes", f"{len(classes)}: " + ", ".join(esc(c) for c in classes) if classes else None),
            ("images per class", _counts_html(data.get("counts") or {})),
            ("skipped (unreadable)", esc(data["skipped"]) if data.get("skipped") else None),
        ]
        sections.append("<h3>Data</h3>" + kv_table(rows))
    split = result.get("split") or {}
    if split:
        rows = [
            (
                "trained on",
                esc(split["train"]) + (f" ({esc(split['n_train'])} images)" if split.get("n_train") is not None else "")
                if split.get("train")
                else None,
            ),
            ("model selection", esc(split["val"]) if split.get("val") else None),
            (
                "scored on",
                esc(split["scored"])
                + (f" ({esc(split['n_scored'])} images)" if split.get("n_scored") is not None else "")
                if split.get("scored")
                else None,
            ),
            ("how the split was made", code_tag(split["origin"]) if split.get("origin") else None),
        ]
        sections.append("<h3>Split</h3>" + kv_table(rows))
    run_rows = [
        ("seed", esc(result["seed"]) if result.get("seed") is not None else None),
        ("command", code_tag(_command(result["command"])) if result.get("command") else None),
        ("date", esc(result["created"]) if result.get("created") else None),
    ]
    budget = result.get("budget")
    if isinstance(budget, Mapping):
        run_rows += [(f"budget: {k}", esc(v)) for k, v in budget.items() if v is not None]
    run = kv_table(run_rows)
    if run:
        sections.append("<h3>Run</h3>" + run)
    versions = result.get("versions") or {}
    if versions:
        sections.append("<h3>Versions</h3>" + kv_table([(k, esc(v)) for k, v in versions.items()]))
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
