"""Every strategy on one dataset under one budget, and what transfer bought against scratch.

``compare`` trains each strategy with the same split, seed and epoch budget, records its
learning curve on the held-out split (report only, never for selection), measures data-size
curves (accuracy against images per class for a probe and a fine-tune strategy), runs the
advisor, and writes ``result.json``, the PNG figures and a self-contained ``report.html``.

Repeats: with ``repeats=R`` every strategy and every data-size point is trained R times; draw
``r`` re-draws the training subset (the selection carve, or the per-class pick of a data-size
point) with seed ``seed + r`` and trains with that seed (a dataset with its own val and test
splits keeps its selection images: only the seed changes). The scored images never change, so the
draws of two strategies pair image by image and draw by draw; ``result.json`` records each
draw's predictions on them (``strategies[name]["draws"]``, ``data_size_draws``) and what they
support (``significance``, ``data_size_evidence``: intervals and paired tests from
``transferkit.stats``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .api import TransferClassifier, as_dataset, library_versions
from .data.roles import Roles, per_class_roles, split_roles
from .errors import ConfigError
from .io import atomic_write_json
from .runtime import CacheLayout
from .strategies import BASELINE, get_strategy, strategy_names

DEFAULT_SIZES = (5, 10, 25, 50)


def default_strategies() -> list[str]:
    """The registry's strategies that are part of the default sweep."""
    return strategy_names(compared_by_default=True)


def default_size_strategies() -> list[str]:
    """A probe and a fine-tune for the data-size curves: the first of each in the registry."""
    return [strategy_names(feature_store=True)[0], strategy_names(feature_store=False, pretrained=True)[0]]


def logged_to(path: Path, log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` that also appends each message, time-stamped, to ``path`` (the run's own log)."""

    def both(message: str) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        log(message)

    return both


def compare(data: Any, backbone: Any, out_dir: str | Path, *,
            strategies: Sequence[str] | None = None, epochs: int | None = None,
            sizes: Sequence[int] = DEFAULT_SIZES, size_strategies: Sequence[str] | None = None,
            size_epochs: int | None = None, repeats: int = 1, advise: bool = True, seed: int = 0,
            device: str = "auto",
            precision: str = "auto", cache_dir: str | Path | None = None, progress: bool = True,
            strategy_params: dict[str, dict[str, Any]] | None = None, title: str | None = None,
            log: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Run the comparison and write ``out_dir/{result.json, report.html, plots/, runs/}``."""
    from .backbones import load_backbone

    strategies = default_strategies() if strategies is None else list(strategies)
    size_strategies = default_size_strategies() if size_strategies is None else list(size_strategies)
    unknown = [s for s in strategies if s not in strategy_names()]
    if unknown or not strategies:
        raise ConfigError(f"--strategies must be a comma-separated subset of {strategy_names()}; "
                          f"got {list(strategies)!r}.")
    if isinstance(repeats, bool) or not isinstance(repeats, int | np.integer) or repeats < 1:
        raise ConfigError(f"--repeats must be a positive integer (draws of the training subset and seed per "
                          f"strategy; 3 or more gives intervals over training noise); got {repeats!r}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = logged_to(out_dir / "compare.log", log)
    cache = CacheLayout.of(cache_dir)
    dataset = as_dataset(data, seed=seed)
    bb = backbone if hasattr(backbone, "forward_layers") else load_backbone(backbone)
    roles = split_roles(dataset, 0.15, seed)
    strategy_params = strategy_params or {}

    def classifier(name: str, draw_seed: int = seed, **extra: Any) -> TransferClassifier:
        params = dict(strategy_params.get(name, {}))
        params.update(extra)
        # The epoch budget binds the strategies that train the network; a head on stored
        # features keeps its own (cheap) schedule.
        budget = epochs if not get_strategy(name).uses_feature_store else None
        return TransferClassifier(backbone=bb, strategy=name, epochs=params.pop("epochs", budget),
                                  params=params, device=device, precision=precision, cache_dir=cache.root,
                                  seed=draw_seed, progress=progress)

    result: dict[str, Any] = {
        "title": title or f"transferkit: {bb.name} on {dataset.name}",
        "backbone": {"name": bb.name, "spec": str(bb.spec), "weights_hash": bb.weights_hash,
                     "pretrained": bb.pretrained, "input_size": list(bb.preprocessing.input_size)},
        "data": {"path": str(dataset.root), "name": dataset.name, "fingerprint": dataset.fingerprint,
                 "n_images": len(dataset), "classes": list(dataset.classes),
                 "counts": {k: int(v) for k, v in dataset.class_counts().items()},
                 "skipped": len(dataset.skipped)},
        "split": {"train": f"{len(roles.train)} train images (+{len(roles.val)} for model selection: "
                           f"{roles.val_origin})",
                  "scored": roles.scored_name, "origin": dataset.split_origin,
                  "n_train": int(len(roles.train) + len(roles.val)), "n_scored": int(len(roles.scored)),
                  "val": roles.val_origin},
        "seed": seed, "versions": library_versions(), "command": list(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget": {"epochs": epochs},
        "repeats": int(repeats), "scored_labels": dataset.labels[roles.scored].tolist(),
        "strategies": {},
    }
    if advise:
        from .advisor import advise as run_advisor

        log("advisor: measuring size and similarity")
        t0 = time.perf_counter()
        advice = run_advisor(dataset, bb, roles=roles, store_dir=cache.features, device=device,
                             seed=seed, progress=progress)
        result["advisor"] = advice.to_dict()
        result["advisor"]["seconds"] = round(time.perf_counter() - t0, 2)

    fitted: dict[str, TransferClassifier] = {}
    for name in strategies:
        draws = []
        for r in range(repeats):
            log(f"strategy {name}: training" + (f" (draw {r + 1} of {repeats})" if repeats > 1 else ""))
            draw_roles = roles if r == 0 else split_roles(dataset, 0.15, seed + r)
            run_dir = out_dir / "runs" / (name if r == 0 else f"{name}-draw{r + 1}")
            clf = classifier(name, draw_seed=seed + r).fit(dataset, run_dir=run_dir, roles=draw_roles)
            draws.append(clf)
        fitted[name] = draws[0]
        first = draws[0]
        result["strategies"][name] = {
            "metrics": first.metrics_, "history": first.history_, "params": first.params_,
            "seconds": round(float(np.mean([c.fit_seconds_ for c in draws])), 2),
            "draws": [draw_record(c, seed + r) for r, c in enumerate(draws)],
        }
        atomic_write_json(out_dir / "result.json", result)  # partial results survive an interruption

    from .report.benefit import transfer_benefit
    from .report.evidence import significance, size_evidence

    result["significance"] = significance(result)
    histories = {n: s["history"] for n, s in result["strategies"].items()}
    if BASELINE in histories:
        result["benefit"] = transfer_benefit(histories, baseline=BASELINE,
                                             verdicts=(result["significance"] or {}).get("vs_baseline"))
    result["best_strategy"] = (result["significance"] or {}).get("best", {}).get("strategy") or max(
        result["strategies"], key=lambda n: result["strategies"][n]["metrics"].get("accuracy", -1))

    if sizes and size_strategies:
        pool = np.concatenate([roles.train, roles.val])
        result["data_size_all_per_class"] = int(np.bincount(dataset.labels[pool]).max())
        result["data_size"], result["data_size_draws"] = data_size_curves(
            dataset, roles, sizes, size_strategies, classifier, size_epochs or epochs, seed, repeats, log)
        add_full_data_points(result["data_size"], result["strategies"])
        result["data_size_evidence"] = size_evidence(result)

    misclassified = misclassified_examples(fitted[result["best_strategy"]], dataset, roles)
    atomic_write_json(out_dir / "result.json", result)
    from .report.html import write_report

    log("writing the report")
    result["report"] = str(write_report(result, out_dir, misclassified_images=misclassified))
    atomic_write_json(out_dir / "result.json", result)
    return result


def draw_record(clf: TransferClassifier, seed: int) -> dict[str, Any]:
    """One draw of a strategy: its seed, accuracy, and predictions on the scored images (for pairing)."""
    return {"seed": seed, "accuracy": clf.metrics_.get("accuracy"),
            "balanced_accuracy": clf.metrics_.get("balanced_accuracy"), "seconds": round(clf.fit_seconds_, 2),
            "pred": np.asarray(clf.scored_pred_).tolist(),
            # the draw's learning curve: start / slope / asymptote get intervals over draws from these
            "history": [{k: row.get(k) for k in ("epoch", "monitor_acc", "val_acc")} for row in clf.history_]}


def data_size_curves(dataset, roles: Roles, sizes: Sequence[int], strategies: Sequence[str],
                     classifier: Callable[..., TransferClassifier], epochs: int | None, seed: int, repeats: int,
                     log: Callable[[str], None]) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list]]]:
    """Held-out accuracy against training images per class, for each of ``strategies``.

    Returns ``({name: {n: mean accuracy over draws}}, {name: {n: [predictions of each draw]}})``.
    Draw ``r`` picks its ``n`` images per class with seed ``seed + r`` (for one seed a smaller
    pick is inside a larger one) and trains with that seed.
    """
    pool = np.concatenate([roles.train, roles.val])
    largest = int(np.bincount(dataset.labels[pool]).max())
    points = sorted({int(n) for n in sizes if 2 <= int(n) < largest})
    curves: dict[str, dict[str, float]] = {}
    draws: dict[str, dict[str, list]] = {}
    for name in strategies:
        curves[name], draws[name] = {}, {}
        for n in points:
            log(f"data-size curve: {name} at {n} images per class" + (f" ({repeats} draws)" if repeats > 1 else ""))
            accs, preds = [], []
            for r in range(repeats):
                sub = per_class_roles(roles, dataset.labels, n, seed + r)
                clf = classifier(name, draw_seed=seed + r,
                                 **({"epochs": epochs} if epochs and not get_strategy(name).uses_feature_store
                                    else {}))
                clf.progress = False
                clf.fit(dataset, roles=sub)
                accs.append(clf.metrics_["accuracy"])
                preds.append(np.asarray(clf.scored_pred_).tolist())
            curves[name][str(n)] = float(np.mean(accs))
            draws[name][str(n)] = preds
    return curves, draws


def add_full_data_points(curves: dict[str, dict[str, float]], strategies: dict[str, Any]) -> None:
    """Extend each data-size curve to "all" with that strategy's full-data accuracy (mean over draws)."""
    for name, curve in curves.items():
        if name in strategies:
            draws = strategies[name].get("draws") or []
            accs = [d["accuracy"] for d in draws if d.get("accuracy") is not None]
            curve["all"] = float(np.mean(accs)) if accs else strategies[name]["metrics"]["accuracy"]


def misclassified_examples(clf: TransferClassifier, dataset, roles: Roles, limit: int = 24):
    """Up to ``limit`` held-out images the best strategy gets wrong, with true and predicted classes."""
    if not len(roles.scored):
        return None
    images = clf.images(dataset)[roles.scored]
    pred = clf.model_.predict(np.ascontiguousarray(images))
    true = dataset.labels[roles.scored]
    wrong = np.flatnonzero(pred != true)[:limit]
    if not len(wrong):
        return None
    return {"images": np.asarray(images[wrong]), "true": [dataset.classes[i] for i in true[wrong]],
            "pred": [dataset.classes[i] for i in pred[wrong]], "strategy": clf.strategy_}
