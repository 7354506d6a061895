"""Develop-model approach on MNIST: pretrain on digits 0-4, transfer to 5-9 with few labels.

    python benchmarks/develop_model.py --mnist ../shared/data/mnist_t10k.npz --per-class 10

A ``tk_smallcnn`` is pretrained from random initialisation on every mnist_t10k image of
classes 0-4 (the source task; its own 10% val split picks the epoch). The target task is
classes 5-9: ``--per-class`` training images per class (drawn from the train part of the
stratified 70/30 split, seed 0), scored on 2,000 held-out target images from the test part.
Each strategy (linear, partial, scratch by default) is trained on the same images and printed
with its held-out accuracy; transfer works when linear and partial beat scratch.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from transferkit import TransferClassifier
from transferkit.data import filter_classes, load_dataset
from transferkit.data.roles import Roles, per_class_pick
from transferkit.pretrain import default_pretrain_config, pretrain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist", default="../shared/data/mnist_t10k.npz")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--strategies", default="linear,partial,scratch")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--pretrain-epochs", type=int, default=5)
    ap.add_argument("--out", default="results/develop_model")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"machine: {platform.machine()} cpus={torch.get_num_threads()} torch {torch.__version__}")

    mnist = load_dataset(args.mnist, seed=args.seed, progress=False)
    source = filter_classes(mnist, [str(c) for c in range(5)])
    target = filter_classes(mnist, [str(c) for c in range(5, 10)])
    out = Path(args.out)
    t0 = time.perf_counter()
    glyphs = {"flip": False, "crop_scale": 0.8}
    if not (out / "source" / "backbone.json").is_file():
        pretrain(source, "tk_smallcnn", out / "source",
                 default_pretrain_config(epochs=args.pretrain_epochs, seed=args.seed, **glyphs), progress=False)
    print(f"source: tk_smallcnn on mnist 0-4 ({len(source)} images), {time.perf_counter() - t0:.0f} s")

    rng = np.random.default_rng(args.seed)
    train_pool = np.flatnonzero(target.splits == "train")
    test_pool = np.flatnonzero(target.splits == "test")
    train = per_class_pick(train_pool, target.labels, args.per_class, rng)
    scored = np.sort(rng.permutation(test_pool)[: args.test_images])
    roles = Roles(train, np.zeros(0, np.int64), scored, "test", "none (fixed epochs)")
    print(f"target: mnist 5-9, {len(train)} training images ({args.per_class} per class), "
          f"{len(scored)} held-out test images")
    for name in args.strategies.split(","):
        params = dict(glyphs) if name in ("partial", "full", "scratch") else {}
        start = time.perf_counter()
        clf = TransferClassifier(backbone=out / "source", strategy=name, params=params,
                                 epochs=args.epochs if params else None, seed=args.seed, progress=False,
                                 cache_dir=out / "cache")
        clf.fit(target, roles=roles)
        print(f"  {name:<13} held-out accuracy {clf.metrics_['accuracy']:.4f}  ({time.perf_counter() - start:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
