"""Re-check the fine-tunes' floor on ``benchmarks/advisor.py``'s tasks without re-running the sweep.

Fits ``partial`` and ``full`` (5 epochs, the sweep's settings) on each task and compares them with the
``linear`` and majority-class figures that an ``advisor.py`` results file holds for the same task (same
images: the fingerprint is checked). The floor (issue 12): never more than 2 points below ``linear``,
never below the majority-class rate.

    .venv/bin/python benchmarks/finetune_floor.py --results benchmarks/results/advisor-2026-11-30b.json \\
        --cache-dir /tmp/bench/cache --tasks mnist_10,digits
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import advisor as sweep  # noqa: E402  (the sweep's tasks, roles and fit)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, required=True, help="an advisor.py results JSON (linear, majority)")
    ap.add_argument("--tasks", default=None, help="comma list (default: every complete task in --results)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.device, args.precision, args.budget = "auto", "auto", None
    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset

    results = json.loads(args.results.read_text())["tasks"]
    names = args.tasks.split(",") if args.tasks else [n for n, e in results.items() if e.get("complete")]
    bb = load_backbone(str(sweep.REPO.parent / "shared" / "weights" / sweep.CARD))
    bad = []
    for name in names:
        spec, entry = sweep.TASKS[name], results[name]
        source = sweep.source_spec(spec.source, sweep.REPO.parent / "shared")
        base = load_dataset(source, seed=args.seed, progress=False)
        task_ds = sweep.build_task(spec, base, args.seed)
        if task_ds.fingerprint != entry["task"]["fingerprint"]:
            raise SystemExit(f"{name}: other images than in {args.results}")
        roles, _ = sweep.fit_roles(task_ds, args.seed)
        linear, majority = entry["oracle"]["linear"]["accuracy"], entry["summary"]["majority_rate"]
        for s in ("partial", "full"):
            run = sweep.fit_one(bb, task_ds, roles, s, {"epochs": args.epochs}, args)
            acc = run["accuracy"]
            ok = acc >= linear - 0.02 and acc >= majority
            bad += [] if ok else [f"{name} {s}"]
            sweep.log(f"{name}: {s:<8} {100 * acc:5.1f}% (linear {100 * linear:.1f}, majority {100 * majority:.1f}) "
                      f"{'ok' if ok else 'BELOW THE FLOOR'}; was {100 * entry['oracle'][s]['accuracy']:.1f} "
                      f"in {args.results.name}; {run['wall_seconds']:.0f}s; epochs' selection scores "
                      f"{[round(h.get('val_acc', 0), 3) for h in run['history']]}")
    print(f"floor: {'met' if not bad else 'NOT met: ' + ', '.join(bad)} on {len(names)} tasks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
