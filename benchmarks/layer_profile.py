"""Held-out accuracy of a classifier on every cut point: where a dataset stops being "similar".

    python benchmarks/layer_profile.py --data ../shared/data/mnist_t10k.npz --per-class 100 --test-images 2000

Features of every cut point come from one pass into the feature store; for each layer a
cross-validated logistic regression is trained on ``--per-class`` training images per class
(train part of the stratified split, seed 0) and scored on ``--test-images`` held-out images
from the test part. For data far from the backbone's source (digits vs ImageNet), an earlier
layer beating the final codes is the four-case table's case 2 ("small & different: cut earlier").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from transferkit import TransferClassifier
from transferkit.backbones import load_backbone
from transferkit.data import load_dataset
from transferkit.data.roles import Roles, per_class_pick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/mnist_t10k.npz")
    ap.add_argument("--backbone", default="../shared/weights/mobilenetv1_075.keras_in1k.json")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--layers", default=None, help="cut points to probe (default: every one but pool; '' for none)")
    ap.add_argument("--strategies", default="linear,hidden", help="also run these on the final codes")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ds = load_dataset(args.data, seed=args.seed, progress=False)
    bb = load_backbone(args.backbone)
    rng = np.random.default_rng(args.seed)
    train_pool, test_pool = np.flatnonzero(ds.splits == "train"), np.flatnonzero(ds.splits == "test")
    train = per_class_pick(train_pool, ds.labels, args.per_class, rng)
    scored = np.sort(rng.permutation(test_pool)[: args.test_images])
    # Only the images of this study, so the one feature pass below covers nothing else.
    ds = ds.subset(np.concatenate([train, scored]))
    train, scored = np.arange(len(train)), np.arange(len(train), len(ds))
    roles = Roles(train, np.zeros(0, np.int64), scored, "test", "none")
    from transferkit.api import default_cache_dir
    from transferkit.features import extract_features

    t = time.perf_counter()
    extract_features(bb, ds, [cp.name for cp in bb.cut_points], progress=False,
                     store_dir=(args.cache_dir and Path(args.cache_dir) or default_cache_dir()) / "features")
    print(f"  every cut point extracted in one pass: {time.perf_counter() - t:.0f} s")
    print(f"{ds.name}: {len(train)} training images ({args.per_class} per class), {len(scored)} held-out; "
          f"backbone {bb.name}")
    layers = [cp.name for cp in bb.cut_points if cp.name != "pool"] if args.layers is None else \
        [name for name in args.layers.split(",") if name]
    runs = [("intermediate", {"layer": name}) for name in layers]
    runs += [(s, {}) for s in args.strategies.split(",") if s]
    for name, params in runs:
        t = time.perf_counter()
        clf = TransferClassifier(backbone=bb, strategy=name, params=params, cache_dir=args.cache_dir,
                                 seed=args.seed, progress=False).fit(ds, roles=roles)
        label = f"{name} @ {params['layer']}" if params else name
        print(f"  {label:<24} held-out accuracy {clf.metrics_['accuracy']:.4f}  ({time.perf_counter() - t:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
