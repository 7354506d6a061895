"""The demo: the whole system on data that ships with the dependencies, offline, in minutes.

Without arguments it runs the develop-model approach on scikit-learn's bundled digits
(1,797 8x8 images): a small CNN (``tk_smallcnn``) is pretrained from scratch on digits 0-4,
the source task, and then transferred to digits 5-9, the target task, which it never saw.
On the target it runs the advisor and compares every strategy against training the same
architecture from scratch, with data-size curves from 2 labels per class to all of them,
several draws each (``repeats``: each re-draws the labelled subset and the seed), and writes
``report.html``. The story it tells is the four-case table's: with very few labels the
transferred features win by a wide, measured margin; with more, scratch catches up (the
crossover, where the paired test stops telling them apart); and what the advisor chose and why.

With ``backbone`` and ``data`` it runs the same study (advisor, comparison, report) on the
user's own backbone and dataset.

Splits: digits are split once by ``load_dataset`` (stratified 70/30, seed 0, exact duplicates
kept on one side). The source model learns from all images of classes 0-4 (its own 10% val
split picks its epoch); every target accuracy is measured on the held-out 30% of classes 5-9.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .io import atomic_write_json
from .strategies import BASELINE, strategy_names

SOURCE_CLASSES = ["0", "1", "2", "3", "4"]
TARGET_CLASSES = ["5", "6", "7", "8", "9"]
# Digits are glyphs: a mirrored 5 is not a 5, and a crop that keeps half the image can cut
# the stroke that tells a 3 from an 8. Photos keep the engine's defaults.
GLYPH_AUGMENTATION = {"flip": False, "crop_scale": 0.8}


DEMO_SIZES = (2, 5, 10, 25, 50)


def run_demo(out_dir: str | Path = "tk-demo", *, backbone: Any = None, data: Any = None, seed: int = 0,
             epochs: int | None = None, pretrain_epochs: int = 12, sizes: tuple[int, ...] = DEMO_SIZES,
             repeats: int = 3,
             cache_dir: str | Path | None = None, device: str = "auto", progress: bool = True,
             log: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Run the demo study into ``out_dir``; returns the headline numbers (also in ``demo.json``)."""
    from .compare import compare, default_size_strategies, logged_to
    from .data import filter_classes, load_dataset

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    log = logged_to(out / "demo.log", log)
    headline: dict[str, Any] = {"out_dir": str(out)}

    if backbone is None and data is None:
        from .engine import TrainConfig
        from .pretrain import default_pretrain_config, pretrain

        digits = load_dataset("digits", seed=seed, progress=False)
        source = filter_classes(digits, SOURCE_CLASSES)
        target = filter_classes(digits, TARGET_CLASSES)
        source_dir = out / "source_model"
        log(f"pretraining tk_smallcnn on digits 0-4 ({len(source)} images) -> {source_dir}")
        config: TrainConfig = default_pretrain_config(epochs=pretrain_epochs, seed=seed, **GLYPH_AUGMENTATION)
        pretrain(source, "tk_smallcnn", source_dir, config, device=device, progress=progress,
                 resume=(source_dir / "pretrain_run").is_dir() and not (source_dir / "backbone.json").is_file())
        from .io import read_json

        pm = read_json(source_dir / "pretrain_metrics.json")
        headline["source"] = {"task": "digits 0-4", "n_images": len(source),
                              "val_accuracy": pm.get("source_val_acc"), "epochs": pm.get("epochs_run")}
        backbone, data = source_dir, target
        title = "transferkit demo: a CNN pretrained on digits 0-4, transferred to digits 5-9"
        epochs = epochs or 15
        augmentation = {name: dict(GLYPH_AUGMENTATION) for name in strategy_names(feature_store=False)}
    else:
        if backbone is None or data is None:
            from .errors import ConfigError

            raise ConfigError("transferkit demo takes both --backbone and --data, or neither (the digits demo).")
        title = None
        epochs = epochs or 8
        augmentation = {}

    log("comparing strategies on the target task")
    result = compare(data, backbone, out / "compare", epochs=epochs, sizes=sizes, repeats=repeats,
                     size_strategies=[*default_size_strategies(), BASELINE], seed=seed, device=device,
                     cache_dir=cache, progress=progress, title=title, strategy_params=augmentation, log=log)
    headline.update(summarise(result))
    headline["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_json(out / "demo.json", headline)
    return headline


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers a person wants first, each with its interval, and only tested claims.

    ``headline``: the report's headline sentence; ``accuracy``: {strategy: {mean, low, high}} with
    all labels; ``best``: the measurably best strategy, or the group within noise of the top;
    ``by_size``: per labels-per-class, the best transfer strategy against scratch (paired
    difference with its interval and verdict); ``scratch_catches_up``: the size from which scratch
    is no longer measurably behind (None: never in the measured range); ``advisor``: its choice,
    its first reason, and whether the choice is among the best.
    """
    from .report.evidence import significance_of, size_evidence_of
    from .report.findings import headline
    from .stats import A_BETTER, B_BETTER

    sig = significance_of(result) or {}
    size_ev = size_evidence_of(result) or {}
    summary: dict[str, Any] = {
        "report": result.get("report"),
        "headline": headline(result),
        "scored_on": f"{result['split']['n_scored']} held-out '{result['split']['scored']}' images",
        "repeats": result.get("repeats", 1),
        "accuracy": {n: {k: round(v[k], 4) for k in ("mean", "low", "high")} if (v := s["accuracy"]) else None
                     for n, s in (sig.get("summary") or {}).items()},
        "best": {k: (sig.get("best") or {}).get(k) for k in ("strategy", "clear", "top_group")},
        "best_strategy": result["best_strategy"],
    }
    words = {A_BETTER: "transfer better", B_BETTER: f"{BASELINE} better"}
    by_size: dict[str, Any] = {}
    for name, sizes in (size_ev.get("vs_baseline") or {}).items():
        for size, d in sizes.items():
            if size not in by_size or d["diff"] > by_size[size]["diff"]:
                by_size[size] = {"strategy": name, "diff": round(d["diff"], 4), "low": round(d["low"], 4),
                                 "high": round(d["high"], 4), "p": d["p"],
                                 "verdict": words.get(d["decision"], "no measurable difference")}
    if by_size:
        summary["by_size"] = dict(sorted(by_size.items(), key=lambda kv: float("inf") if kv[0] == "all"
                                         else int(kv[0])))
        up = size_ev.get("catches_up") or {}
        summary["scratch_catches_up"] = up.get("size")
    advisor = result.get("advisor") or {}
    if advisor:
        summary["advisor"] = {"strategy": advisor.get("strategy"), "why": (advisor.get("reasons") or [None])[0],
                              "among_the_best": advisor.get("strategy") in (summary["best"]["top_group"] or [])}
    return summary
