"""Feature-extraction throughput: a plain PyTorch loop vs transferkit's extract_features.

For each dataset, in one run, with the same model (the backbone card's weights) and the same files:

(a) plain loop, written as the PyTorch transfer-learning tutorial writes it: torchvision
    ``ImageFolder`` + ``Resize((224, 224))`` + ``ToTensor`` + ``Normalize`` per image, a
    ``DataLoader`` (the tutorial's batch_size=4, num_workers=4 unless told otherwise), fp32, NCHW,
    model in eval mode under ``torch.no_grad``; it computes the same pooled features;
(b) ``transferkit.features.extract_features`` on a cold start: fresh store dir and fresh decode
    cache (``load_dataset`` is timed separately: it reads and checks every file once);
(c) the same ``extract_features`` call again (warm store: no decoding, no network).

Prints images/second, the ratios (b)/(a) and (c)/(b), the split of (b) into decode and forward,
and the machine. Wall-clock numbers are never asserted; compare ratios from the same run.

    .venv/bin/python benchmarks/extract.py [--data DIR ...] [--backbone CARD] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def plain_loop(bb, data: Path, limit: int | None, batch_size: int, workers: int) -> tuple[int, float]:
    """The tutorial's loop over the same files; returns (images, seconds)."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    pre = bb.preprocessing
    t0 = time.perf_counter()
    tf = transforms.Compose([
        transforms.Resize(tuple(pre.input_size[1:])),
        transforms.ToTensor(),
        transforms.Normalize(list(pre.mean), list(pre.std)),
    ])
    image_dataset = datasets.ImageFolder(str(data), tf)
    if limit:
        image_dataset = Subset(image_dataset, range(min(limit, len(image_dataset))))
    loader = DataLoader(image_dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    model = bb.model
    model.eval()
    n = 0
    with torch.no_grad():
        for inputs, _labels in loader:
            feats = model.forward_head(model.forward_features(inputs), pre_logits=True)
            n += feats.shape[0]
    return n, time.perf_counter() - t0


def transferkit_run(bb, data: Path, limit: int | None, cache: Path, batch_size: int, precision: str):
    from transferkit.data import load_dataset
    from transferkit.features import extract_features
    from transferkit.runtime import CacheLayout

    store = CacheLayout(cache).features  # decoded images go to the fresh cache's decoded/ folder

    t0 = time.perf_counter()
    ds = load_dataset(str(data))
    n_loaded = len(ds)
    if limit:
        ds = ds.subset(np.arange(min(limit, len(ds))))
    t_load = time.perf_counter() - t0
    runs = []
    for _ in range(2):  # cold, then warm
        t0 = time.perf_counter()
        fs = extract_features(bb, ds, ["pool"], store_dir=store, batch_size=batch_size, precision=precision,
                              progress=False)
        runs.append((time.perf_counter() - t0, fs))
    # Split of the cold run: decode alone (fresh cache dir), forward = the rest.
    t0 = time.perf_counter()
    ds.decode(bb.preprocessing.input_size[1:], bb.preprocessing.interpolation, cache / "decode-probe",
              progress=False)
    t_decode = time.perf_counter() - t0
    return len(ds), n_loaded, t_load, runs, t_decode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", type=Path,
                    default=[SHARED / "data" / "hymenoptera", SHARED / "data" / "flowers5"])
    ap.add_argument("--backbone", default=str(SHARED / "weights" / "mobilenetv1_075.keras_in1k.json"))
    ap.add_argument("--limit", type=int, default=None, help="use the first N images of each dataset")
    ap.add_argument("--batch-size", type=int, default=None, help="transferkit batch size (default: its own)")
    ap.add_argument("--precision", default="auto", help="transferkit precision: auto, fp32, bf16")
    ap.add_argument("--baseline-batch-size", type=int, default=4, help="plain loop (tutorial: 4)")
    ap.add_argument("--baseline-workers", type=int, default=4, help="plain loop DataLoader workers (tutorial: 4)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    from transferkit.backbones import load_backbone
    from transferkit.runtime import describe, resolve_device, resolve_precision

    bb = load_backbone(args.backbone)
    dev = resolve_device("auto")
    prec = resolve_precision(args.precision, dev)
    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
          f"torch_threads={torch.get_num_threads()} loadavg={os.getloadavg()[0]:.1f}")
    print(f"torch {torch.__version__}, python {platform.python_version()}, device: {describe(dev, prec)}")
    from transferkit.features import default_batch_size

    bs = args.batch_size or default_batch_size(dev)
    print(f"backbone: {bb.name} input {tuple(bb.preprocessing.input_size)}; transferkit batch={bs} "
          f"precision={prec}; plain loop batch={args.baseline_batch_size} workers={args.baseline_workers} fp32")
    totals = {"a": [0, 0.0], "b": [0, 0.0], "c": [0, 0.0], "load": [0, 0.0]}
    for data in args.data:
        cache = Path(tempfile.mkdtemp(prefix="tk-bench-"))
        try:
            n_a, t_a = plain_loop(bb, data, args.limit, args.baseline_batch_size, args.baseline_workers)
            n_b, n_loaded, t_load, runs, t_dec = transferkit_run(bb, data, args.limit, cache, args.batch_size, prec)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        (t_b, fs_b), (t_c, fs_c) = runs
        assert not fs_b.from_cache and fs_c.from_cache
        for k, n, t in (("a", n_a, t_a), ("b", n_b, t_b), ("c", n_b, t_c), ("load", n_b, t_load)):
            totals[k][0] += n
            totals[k][1] += t
        print(f"\n{data.name}: {n_a} images (plain loop), {n_b} (transferkit; load_dataset keeps readable ones)")
        print(f"  (a) plain PyTorch loop          {n_a / t_a:9.1f} img/s  ({t_a:.2f} s)")
        print(f"  (b) transferkit cold            {n_b / t_b:9.1f} img/s  ({t_b:.2f} s: decode {t_dec:.2f} s "
              f"+ forward/store {t_b - t_dec:.2f} s)")
        print(f"  (c) transferkit warm re-run     {n_b / t_c:9.1f} img/s  ({t_c:.3f} s)")
        print(f"      load_dataset (not in b)     {n_loaded / t_load:9.1f} img/s  ({t_load:.2f} s for all "
              f"{n_loaded} images)")
        print(f"  (b)/(a) = {(n_b / t_b) / (n_a / t_a):.2f}x   (c)/(b) re-run speed-up = {t_b / t_c:.1f}x   "
              f"(b incl. load_dataset)/(a) = {(n_b / (t_b + t_load)) / (n_a / t_a):.2f}x")
    if len(args.data) > 1:
        ra, rb, rc = (totals[k][0] / totals[k][1] for k in "abc")
        rbl = totals["b"][0] / (totals["b"][1] + totals["load"][1])
        print(f"\nall datasets: (a) {ra:.1f} img/s  (b) {rb:.1f} img/s  (c) {rc:.1f} img/s  "
              f"(b)/(a) = {rb / ra:.2f}x  (c)/(b) = {rc / rb:.1f}x  (b incl. load_dataset)/(a) = {rbl / ra:.2f}x")


if __name__ == "__main__":
    main()
