"""CUDA throughput: feature extraction and one fine-tuning epoch on the GPU, against the same on the CPU.

Both halves run transferkit's own code paths, nothing re-implemented here:

- extraction: ``extract_features`` into a fresh store, reading the images from the decode cache
  (decoding is timed separately and excluded): on CUDA bf16 autocast (fp16 where the GPU has no
  bf16), channels_last, batches copied from pinned memory with ``non_blocking``; on the CPU fp32
  (``precision="auto"`` resolves both, see ``transferkit.runtime``);
- fine-tuning: ``engine.fit_network`` (Lightning Fabric), every layer trained, random resized crop +
  flip on uint8 batches, a pinned-memory DataLoader on CUDA, AMP bf16 on CUDA and ``auto`` on the
  CPU; two epochs, the second reported as the steady state (the first includes CUDA/cuDNN start-up).

The model is the MobileNet v1 0.75 card from ``../shared/weights`` when it is there, else the same
timm architecture built without weights (``--backbone`` takes any backbone spec; the speed does
not depend on the weights). The images are synthetic (random, already at the input size) unless
``--data`` names a dataset. The CPU half uses fewer images (``--cpu-images``) so the whole script
takes a couple of minutes. Wall-clock figures are printed, never asserted.

Without a CUDA GPU it says so and exits with status 0; ``--cpu-only`` then measures the CPU half.

    python benchmarks/cuda.py                                  # card + 2,048 synthetic images
    python benchmarks/cuda.py --data ../shared/data/hymenoptera --backbone resnet50
    python benchmarks/cuda.py --train-batch-size 128 --workers 8
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TK_SHARED", REPO.parent / "shared"))
CARD = SHARED / "weights" / "mobilenetv1_075.keras_in1k.json"
FALLBACK_ARCH = "mobilenetv1_075"  # the card's architecture, registered with timm by transferkit


def no_gpu_reason() -> str | None:
    """Why CUDA cannot be used here, or None when it can."""
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build"
    if not torch.cuda.is_available():
        return (f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable CUDA GPU "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return None


def load_model(spec: str | None):
    from transferkit.backbones import load_backbone

    if spec:
        return load_backbone(spec), spec
    if CARD.is_file():
        return load_backbone(CARD), CARD.name
    return load_backbone(FALLBACK_ARCH, pretrained=False), f"{FALLBACK_ARCH} (no weights: {CARD} is missing)"


def load_images(data: str | None, n: int, size: tuple[int, int], tmp: Path):
    """An ImageDataset: the named one, or ``n`` random images already at ``size`` (no resizing)."""
    from transferkit.data import load_dataset

    if data:
        return load_dataset(data)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, *size, 3), dtype=np.uint8)
    path = tmp / "synthetic.npz"
    np.savez(path, images=images, labels=np.arange(n) % 10)
    return load_dataset(path)


def decoded(ds, bb, cache: Path) -> tuple[np.ndarray, float]:
    pre = bb.preprocessing
    t0 = time.perf_counter()
    images = ds.decode(tuple(pre.input_size[1:]), pre.interpolation, cache_dir=cache, progress=False)
    return images, time.perf_counter() - t0


def extraction(bb, ds, device: str, batch_size: int | None, tmp: Path) -> tuple[float, str, int]:
    """(images/s, precision, batch) of extract_features, decoding excluded, after a warm-up pass."""
    from transferkit.features import default_batch_size, extract_features
    from transferkit.runtime import resolve_device

    bs = batch_size or default_batch_size(resolve_device(device))
    cache = tmp / "decoded"
    warm = ds.subset(np.arange(min(len(ds), 2 * bs)))
    for part in (warm, ds):
        decoded(part, bb, cache)
    extract_features(bb, warm, ["pool"], store_dir=tmp / f"warm-{device}", device=device, batch_size=bs,
                     progress=False, decode_cache=cache)
    _sync(device)
    t0 = time.perf_counter()
    fs = extract_features(bb, ds, ["pool"], store_dir=tmp / f"store-{device}", device=device, batch_size=bs,
                          progress=False, decode_cache=cache)
    _sync(device)
    return len(ds) / (time.perf_counter() - t0), fs.precision, bs


def fine_tuning(bb, ds, device: str, batch_size: int, workers: int, tmp: Path) -> tuple[list[float], str]:
    """(images/s of epoch 1 and 2, precision) of fit_network training every layer."""
    from transferkit.engine import ArrayData, TrainConfig, fit_network

    images, _ = decoded(ds, bb, tmp / "decoded")
    cfg = TrainConfig(epochs=2, batch_size=batch_size, optimizer="sgd", lr=1e-3, body_lr_ratio=1.0,
                      weight_decay=0.0, precision="auto", seed=0, augment=True, flip=True, freeze_stages=0,
                      num_workers=workers)
    net = bb.build_network(len(ds.classes))
    with tempfile.TemporaryDirectory(dir=tmp) as run:
        # In memory, like the network strategies' training subsets (a read-only memmap would warn).
        res = fit_network(net, ArrayData(np.array(images), ds.labels), None, cfg, run, progress=False, device=device)
    return [len(ds) / h["seconds"] for h in res.history], res.precision


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(bb, ds, device: str, args, tmp: Path) -> dict:
    ex, ex_prec, ex_bs = extraction(bb, ds, device, args.batch_size, tmp)
    ft, ft_prec = fine_tuning(bb, ds, device, args.train_batch_size, args.workers, tmp)
    return {"n": len(ds), "extract": ex, "extract_precision": ex_prec, "extract_batch": ex_bs,
            "epoch1": ft[0], "epoch2": ft[-1], "train_precision": ft_prec}


def main() -> int:
    from transferkit.engine import TrainConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default=None, help=f"backbone spec (default: {CARD.name}, else {FALLBACK_ARCH} "
                    "without weights)")
    ap.add_argument("--data", default=None, help="a dataset (folder, .npz, ...); default: synthetic images")
    ap.add_argument("--images", type=int, default=2048, help="images on CUDA (synthetic, or the first N of --data)")
    ap.add_argument("--cpu-images", type=int, default=256, help="images on the CPU")
    ap.add_argument("--batch-size", type=int, default=None, help="extraction batch (default: the library's)")
    ap.add_argument("--train-batch-size", type=int, default=TrainConfig().batch_size)
    ap.add_argument("--workers", type=int, default=TrainConfig().num_workers, help="DataLoader workers when training")
    ap.add_argument("--cpu-only", action="store_true", help="without a GPU: measure the CPU half anyway")
    args = ap.parse_args()

    reason = no_gpu_reason()
    if reason is not None and not args.cpu_only:
        print(f"No CUDA GPU: {reason}. Nothing measured; run this on a machine with an NVIDIA GPU "
              "(or pass --cpu-only for the CPU half).")
        return 0
    warnings.filterwarnings("ignore", module="lightning")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bb, model_name = load_model(args.backbone)
    size = tuple(int(v) for v in bb.preprocessing.input_size[1:])
    gpu = None if reason else torch.cuda.get_device_name(0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"{torch.get_num_threads()} torch threads, GPU: {gpu or 'none'}; torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}); load average {os.getloadavg()}")
    print(f"model: {model_name}, input {size[0]}x{size[1]}; data: {args.data or 'synthetic'}; "
          f"fine-tuning batch {args.train_batch_size}, {args.workers} loader workers")
    with tempfile.TemporaryDirectory(prefix="tk-cuda-bench-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        ds = load_images(args.data, max(args.images if gpu else 0, args.cpu_images), size, tmp)
        print(f"dataset: {len(ds)} images, loaded in {time.perf_counter() - t0:.1f}s")
        rows = {}
        if gpu:
            rows["cuda"] = measure(bb, ds.subset(np.arange(min(args.images, len(ds)))), "cuda", args, tmp)
            peak = torch.cuda.max_memory_allocated() / 2**30
        rows["cpu"] = measure(bb, ds.subset(np.arange(min(args.cpu_images, len(ds)))), "cpu", args, tmp)
    for dev, r in rows.items():
        print(f"{dev:>4} ({r['n']} images): extraction {r['extract']:8.1f} img/s ({r['extract_precision']}, batch "
              f"{r['extract_batch']}); fine-tuning epoch {r['epoch2']:8.1f} img/s ({r['train_precision']}; first "
              f"epoch {r['epoch1']:.1f} img/s)")
    if gpu:
        c, p = rows["cuda"], rows["cpu"]
        print(f"CUDA / CPU: extraction {c['extract'] / p['extract']:.1f}x, fine-tuning epoch "
              f"{c['epoch2'] / p['epoch2']:.1f}x; peak GPU memory {peak:.2f} GiB")
    else:
        print(f"CUDA: not measured ({reason}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
