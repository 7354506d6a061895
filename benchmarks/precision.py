"""Does bf16 feature extraction keep linear-probe accuracy? fp32 vs bf16 on the same splits.

For each dataset and each seed, the dataset's own stratified, duplicate-safe split (``load_dataset(...,
seed=s)``; a tree with split folders keeps its folders, so one seed is enough there) is used twice:
features extracted in fp32 and in bf16 autocast (both channels_last) go through the same linear
probe as ``strategy="linear"`` (standardise, cross-validated multinomial logistic regression over
the same C grid), scored on the held-out part. Prints both accuracies, the paired difference per
split and its mean and standard error; the rule in ``transferkit.runtime`` is that bf16 may be the
CPU default only when it keeps the probe within 0.3 points of fp32.

    .venv/bin/python benchmarks/precision.py                                  # hymenoptera + flowers5
    .venv/bin/python benchmarks/precision.py --data ../shared/data/flowers5 --seeds 0,1,2,3,4
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RULE_POINTS = 0.3


def probe_accuracy(x: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, n_classes: int,
                   seed: int) -> tuple[float, float]:
    """(held-out accuracy, chosen C) of the linear strategy's probe on these features."""
    from transferkit.strategies._probe import fit_logistic, standardiser

    mean, scale = standardiser(x[train])
    head, info = fit_logistic((x[train] - mean) / scale, labels[train], n_classes, seed)
    with torch.no_grad():
        logits = head(torch.from_numpy(((x[test] - mean) / scale).astype(np.float32)))
    return float((logits.argmax(1).numpy() == labels[test]).mean()), float(info["C"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", type=Path,
                    default=[SHARED / "data" / "hymenoptera", SHARED / "data" / "flowers5"])
    ap.add_argument("--backbone", default=str(SHARED / "weights" / "mobilenetv1_075.keras_in1k.json"))
    ap.add_argument("--layer", default="pool")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="split seeds (datasets without split folders)")
    ap.add_argument("--store", type=Path, default=None, help="feature store (default: a temporary folder)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import tempfile

    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset
    from transferkit.features import extract_features
    from transferkit.runtime import describe, resolve_device

    bb = load_backbone(args.backbone)
    print(f"backbone {bb.name}, layer {args.layer}; {describe(resolve_device('auto'), 'bf16')}")
    # A fresh cache's features/ folder: the decoded images go next to it (CacheLayout), not into /tmp.
    store = args.store or Path(tempfile.mkdtemp(prefix="tk-precision-")) / "features"
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    for data in args.data:
        diffs = []
        for seed in seeds:
            ds = load_dataset(str(data), seed=seed, progress=False)
            train = np.flatnonzero(ds.splits == "train")
            test = np.flatnonzero(ds.splits != "train")
            acc = {}
            for precision in ("fp32", "bf16"):
                t0 = time.perf_counter()
                fs = extract_features(bb, ds, [args.layer], store_dir=store, precision=precision, progress=False)
                acc[precision] = (*probe_accuracy(fs.features[args.layer], ds.labels, train, test,
                                                  len(ds.classes), seed), time.perf_counter() - t0)
            diff = 100 * (acc["bf16"][0] - acc["fp32"][0])
            diffs.append(diff)
            print(f"{data.name} seed {seed}: train {len(train)} -> held-out {len(test)} ({ds.split_origin}): "
                  f"fp32 {acc['fp32'][0]:.4f} (C={acc['fp32'][1]:.3g})  bf16 {acc['bf16'][0]:.4f} "
                  f"(C={acc['bf16'][1]:.3g})  bf16 - fp32 {diff:+.2f} points", flush=True)
            if not ds.split_origin.startswith("stratified"):
                break  # fixed split folders: other seeds give the same split
        d = np.array(diffs)
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        verdict = "within" if abs(d.mean()) <= RULE_POINTS else "OUTSIDE"
        print(f"{data.name}: mean bf16 - fp32 {d.mean():+.2f} points (standard error {se:.2f}, {len(d)} split(s)): "
              f"{verdict} the {RULE_POINTS} point rule", flush=True)


if __name__ == "__main__":
    main()
