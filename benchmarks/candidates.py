"""The feature-store candidates (head2toe, adabn, knn) against linear on real tasks.

For each task (``benchmarks/advisor.py``'s task construction: training pool + fixed held-out
split; the mobilenetv1_075 card) every strategy is fitted through its own ``fit`` on the train +
selection images and scored on the held-out split from the stored features (``FitContext``'s
monitor split: recorded, never used for a choice). ``fit s`` is the strategy's fit with the
features already in the store (adabn: its BatchNorm pass and the adapted features' extraction
included, listed apart as ``adapt s``); ``call s`` is one ``fit_arrays`` call on the same rows,
what ``auto``'s cross-validation pays per fold.

Measured (seed 0, one split per task; 2 shared CPU cores, contended: seconds are indicative only;
head2toe = every feature, the default; head2toe_select = keep_fraction=None):

    task (learn/scored)    linear  intermediate  head2toe  head2toe_select  adabn   knn
    hymenoptera (244/153)  0.928   0.928         0.908     0.908            0.889   0.902
    flowers5_10 (50/1297)  0.490   0.490         0.532     0.533            0.389   0.487
    mnist_10 (100/2000)    0.857   0.897         0.886     0.866            0.825   0.825
    breastmnist_30 (60/156) 0.737  0.660         0.744     0.692            0.724   0.699
    digits (1258/539)      0.983   0.983         0.987     0.987            0.950   0.935
    mnist_100 (1000/2000)  0.955   0.955         0.962     0.962            0.939   0.931
    flowers5_all (3020/1297) 0.682 0.682         0.721     0.721            0.630   0.663
    mean                   0.804   0.799         0.820     0.810            0.764   0.777

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/candidates.py --out /tmp/candidates.json
    .venv/bin/python benchmarks/candidates.py --tasks digits,hymenoptera
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from advisor import CARD, TASKS, TaskSpec, build_task  # noqa: E402

EXTRA = {t.name: t for t in (TaskSpec("mnist_100", "mnist", 100, 200), TaskSpec("breastmnist_30", "breastmnist", 30))}
DEFAULT_TASKS = ("hymenoptera", "flowers5_10", "flowers5_all", "mnist_10", "mnist_100", "breastmnist_30", "digits")
# name -> (strategy, params)
VARIANTS = {
    "linear": ("linear", {}),
    "intermediate": ("intermediate", {}),
    "head2toe": ("head2toe", {}),  # the default: every feature, L2 on the whole concatenation
    "head2toe_select": ("head2toe", {"keep_fraction": None}),  # the kept fraction chosen by CV
    "adabn": ("adabn", {}),
    "knn": ("knn", {}),
}


def source_spec(source: str, shared: Path) -> str:
    return {"hymenoptera": shared / "data" / "hymenoptera", "flowers5": shared / "data" / "flowers5",
            "mnist": shared / "data" / "mnist_t10k.npz", "breastmnist": shared / "data" / "breastmnist.npz",
            "digits": "digits"}[source].__str__()


def run_task(spec: TaskSpec, bb, base, cache, seed: int, variants: list[str]) -> dict:
    from transferkit.data.roles import split_roles
    from transferkit.strategies import get_strategy
    from transferkit.strategies._probe import learnable_indices, stored_features
    from transferkit.strategies.base import FitContext

    task = build_task(spec, base, seed)
    roles = split_roles(task, 0.15, seed)

    def context(params: dict) -> FitContext:
        return FitContext(backbone=bb, dataset=task, train_idx=roles.train, val_idx=roles.val,
                          monitor_idx=roles.scored, params=params, run_dir=Path(tempfile.mkdtemp()), cache=cache,
                          device="cpu", precision="fp32", seed=seed, progress=False)

    ctx = context({})
    t0 = time.perf_counter()
    stored_features(ctx, [cp.name for cp in bb.cut_points if cp.name != "stem"])
    out = {"n_learn": int(len(learnable_indices(ctx))), "n_scored": int(len(roles.scored)),
           "extract_seconds": round(time.perf_counter() - t0, 1), "strategies": {}}
    for name in variants:
        strategy, params = VARIANTS[name]
        cls = type(get_strategy(strategy))
        ctx = context(dict(params))
        adapt = 0.0
        if strategy == "adabn":
            from transferkit.strategies.adabn import adapted_backbone

            t0 = time.perf_counter()
            adapted_backbone(ctx)
            cls.candidate_features(ctx, {**cls.defaults, **params})
            adapt = time.perf_counter() - t0
        t0 = time.perf_counter()
        model = get_strategy(strategy).fit(ctx)
        fit_s = time.perf_counter() - t0 + adapt
        acc = ctx.history[-1]["monitor_acc"]
        row = {"accuracy": round(acc, 4), "fit_seconds": round(fit_s, 2), "adapt_seconds": round(adapt, 2)}
        if strategy != "intermediate":  # intermediate's fit is the CV over layers, not one candidate
            merged = {**cls.defaults, **params}
            feats = cls.candidate_features(ctx, merged)
            idx = learnable_indices(ctx)
            t0 = time.perf_counter()
            cls.fit_arrays({k: v[idx] for k, v in feats.items()}, task.labels[idx], len(task.classes), merged, seed)
            row["call_seconds"] = round(time.perf_counter() - t0, 2)
        row["chosen"] = {k: model.info[k] for k in ("layer", "k", "keep_fraction", "kept_features", "C")
                         if k in model.info}
        if getattr(model, "layer", None):
            row["chosen"]["layer"] = model.layer
        out["strategies"][name] = row
        print(f"  {spec.name:15s} {name:13s} acc {acc:.4f}  fit {fit_s:6.2f}s  {row['chosen']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("candidates.json"))
    args = ap.parse_args(argv)

    from transferkit.api import default_cache_dir
    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset
    from transferkit.io import atomic_write_json
    from transferkit.runtime import CacheLayout

    cache = CacheLayout(Path(args.cache_dir or default_cache_dir()))
    bb = load_backbone(str(args.shared / "weights" / CARD))
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    bases = {}
    tasks = {**TASKS, **EXTRA}
    for name in args.tasks.split(","):
        spec = tasks[name]
        if name in results:
            continue
        if spec.source not in bases:
            bases[spec.source] = load_dataset(source_spec(spec.source, args.shared), seed=args.seed, progress=False)
        results[name] = run_task(spec, bb, bases[spec.source], cache, args.seed, args.variants.split(","))
        atomic_write_json(args.out, results)
    names = args.variants.split(",")
    print(f"{'task':15s} " + " ".join(f"{n:>21s}" for n in names))
    for task, r in results.items():
        cells = [f"{r['strategies'][n]['accuracy']:.3f} ({r['strategies'][n]['fit_seconds']:5.1f}s)"
                 if n in r["strategies"] else "-" for n in names]
        print(f"{task:15s} " + " ".join(f"{c:>21s}" for c in cells))
    means = {n: np.mean([r["strategies"][n]["accuracy"] for r in results.values() if n in r["strategies"]])
             for n in names}
    print(f"{'mean':15s} " + " ".join(f"{means[n]:21.3f}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
