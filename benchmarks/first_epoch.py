"""First-epoch training loss of the probe-started fine-tunes, with the recipe and without it.

The knock-down issue 12 measured: a network whose head starts at the linear probe is knocked over by
its first full-learning-rate steps (breastmnist: first-epoch training loss 8.9 / 10.3 for partial /
full in the issue's run, 2.11 / 2.78 after the epoch-0 candidate landed). This script fits
``partial`` and ``full`` on a dataset twice: with the recipe as it stands ("auto" warm-up,
BatchNorm policy and class weighting) and with the old defaults (no warm-up, source BatchNorm
statistics, unweighted loss), each on the same 5-epoch schedule stopped after its first epoch,
and prints the first epoch's mean training loss (unweighted cross-entropy is not logged
separately: with class weighting the logged loss is the weighted one, which is said beside it)
and the selection accuracy after it.

    .venv/bin/python benchmarks/first_epoch.py [--data ../shared/data/breastmnist.npz] [--epochs 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OLD_DEFAULTS = {"warmup_epochs": 0.0, "bn_policy": "eval", "class_weight": "none"}


def first_epoch(strategy: str, params: dict, data, backbone, epochs: int, cache: Path) -> dict:
    from transferkit.data.roles import split_roles
    from transferkit.runtime import CacheLayout
    from transferkit.strategies import FitContext, get_strategy

    roles = split_roles(data, 0.15, 0)
    s = get_strategy(strategy)
    with tempfile.TemporaryDirectory(prefix="tk-first-epoch-") as run_dir:
        ctx = FitContext(backbone=backbone, dataset=data, train_idx=roles.train, val_idx=roles.val, monitor_idx=None,
                         params={**s.defaults, "epochs": epochs, **params}, run_dir=Path(run_dir),
                         cache=CacheLayout(cache), progress=False, keep_going=lambda history: False)
        t0 = time.perf_counter()
        model = s.fit(ctx)
        row = ctx.history[0]
    recipe = model.info.get("recipe", {})
    bn = recipe.get("batchnorm", {})
    return {"train_loss": row["train_loss"], "val_acc": row.get("val_acc"), "seconds": time.perf_counter() - t0,
            "class_weight": recipe.get("imbalance", {}).get("class_weight"),
            "bn_policy": bn.get("resolved", bn.get("bn_policy")),
            "warmup": recipe.get("warmup", {}).get("warmup_epochs")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED / "data" / "breastmnist.npz"))
    ap.add_argument("--backbone", default=str(SHARED / "weights" / "mobilenetv1_075.keras_in1k.json"))
    ap.add_argument("--epochs", type=int, default=5, help="the schedule's length (stopped after epoch 1)")
    ap.add_argument("--cache-dir", type=Path, default=None)
    args = ap.parse_args()

    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset

    data = load_dataset(args.data, progress=False)
    backbone = load_backbone(args.backbone)
    with tempfile.TemporaryDirectory(prefix="tk-first-epoch-cache-") as tmp:
        cache = args.cache_dir or Path(tmp)
        print(f"{data.name}: first epoch of a {args.epochs}-epoch schedule, {backbone.name}")
        print(f"{'strategy':<8} | {'setting':<34} | train loss | selection acc | s")
        for strategy in ("partial", "full"):
            for label, params in (("old defaults (no warm-up, BN eval)", OLD_DEFAULTS), ("recipe (auto)", {})):
                r = first_epoch(strategy, params, data, backbone, args.epochs, cache)
                extra = f" [{r['class_weight']} loss, bn {r['bn_policy']}, warm-up {r['warmup']}]" if not params else ""
                print(f"{strategy:<8} | {label:<34} | {r['train_loss']:10.3f} | {r['val_acc']:13.3f} | "
                      f"{r['seconds']:.0f}{extra}")


if __name__ == "__main__":
    main()
