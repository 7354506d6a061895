"""Images/second of fine-tuning epochs: transferkit's engine vs a plain PyTorch tutorial loop.

Baseline, written like the PyTorch transfer-learning tutorial: ImageFolder + RandomResizedCrop(224)
+ RandomHorizontalFlip + ToTensor + Normalize applied per image every epoch (JPEG decoded every
epoch), NCHW fp32, SGD(momentum 0.9), every layer trained.

transferkit: the dataset is decoded and resized once to uint8 (N,3,224,224) (``ImageDataset.decode``),
augmented on the fly on uint8 tensors (random resized crop scale (0.5,1) + flip), channels_last,
bf16 autocast on CPU (``precision="auto"``), the same SGD, the same model (mobilenetv1_075 card),
the same data, in the same process. ``--strategy full`` trains every layer (same work as the
baseline); ``--strategy partial`` is our default partial fine-tune (stem + 2 stages frozen: no
backward through them), reported separately because it is less work, not a faster loop.

The baseline runs twice in the same process: (a) with the tutorial's own loader settings
(batch_size=4, num_workers=4), and (b) at transferkit's batch size with num_workers=0, which
isolates the training loop itself (same batch, no loader processes). transferkit runs at its
engine's default batch size (``TrainConfig.batch_size``) unless ``--batch-size`` is given.

Printed: first epoch (transferkit: decode + epoch) and steady-state (second) epoch, both as
images/second, and the ratios against both baselines. Nothing is asserted: wall-clock numbers on
a shared machine vary.

    .venv/bin/python benchmarks/train.py                       # defaults: ../shared data + card
    .venv/bin/python benchmarks/train.py --strategy partial --batch-size 16
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TK_SHARED", REPO.parent / "shared"))


def baseline_epochs(card: Path, data: Path, batch_size: int, epochs: int, seed: int, workers: int = 0) -> list[float]:
    """Seconds per epoch of the tutorial loop."""
    from torchvision import datasets, transforms

    from transferkit.backbones import load_backbone

    bb = load_backbone(card)
    pre = bb.preprocessing
    net = bb.build_network(2).train()
    model = nn.Sequential(net.body, net.head)  # normalisation done by the transform, as in the tutorial
    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(pre.input_size[1]),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]
    )
    ds = datasets.ImageFolder(str(data), tf)
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for x, y in loader:
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def transferkit_epochs(
    card: Path, data: Path, batch_size: int, epochs: int, seed: int, strategy: str
) -> tuple[float, list[float], str, int]:
    """(decode seconds, seconds per epoch, precision, n images) of the transferkit engine."""
    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset
    from transferkit.engine import ArrayData, TrainConfig, fit_network

    bb = load_backbone(card)
    pre = bb.preprocessing
    ds = load_dataset(data)
    t0 = time.perf_counter()
    images = ds.decode(tuple(pre.input_size[1:]), pre.interpolation, progress=False)
    decode = time.perf_counter() - t0
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        optimizer="sgd",
        lr=1e-3,
        body_lr_ratio=1.0,
        weight_decay=0.0,
        precision="auto",
        seed=seed,
        augment=True,
        flip=True,
        freeze_stages=2 if strategy == "partial" else 0,
        bn_policy="frozen" if strategy == "partial" else "train",
    )
    net = bb.build_network(len(ds.classes))
    with tempfile.TemporaryDirectory() as run:
        res = fit_network(net, ArrayData(images, ds.labels), None, cfg, run, progress=False, device="cpu")
    return decode, [h["seconds"] for h in res.history], res.precision, len(ds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "hymenoptera" / "train")
    ap.add_argument("--card", type=Path, default=SHARED / "weights" / "mobilenetv1_075.keras_in1k.json")
    ap.add_argument("--batch-size", type=int, default=None, help="transferkit's (default: the engine's)")
    ap.add_argument("--baseline-batch-size", type=int, default=4, help="tutorial loop (tutorial: 4)")
    ap.add_argument("--baseline-workers", type=int, default=4, help="tutorial loop DataLoader workers (tutorial: 4)")
    ap.add_argument("--strategy", choices=("full", "partial"), default="full")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}"
    )
    from transferkit.engine import TrainConfig

    bs = args.batch_size or TrainConfig().batch_size
    print(f"data: {args.data}  model: {args.card.name}  tk strategy: {args.strategy}, batch {bs}; tutorial loop "
          f"batch {args.baseline_batch_size}, workers {args.baseline_workers}")

    tutorial = baseline_epochs(args.card, args.data, args.baseline_batch_size, 2, args.seed, args.baseline_workers)
    same_batch = baseline_epochs(args.card, args.data, bs, 2, args.seed, 0)
    decode, ours, precision, n = transferkit_epochs(args.card, args.data, bs, 2, args.seed, args.strategy)
    t1, t2 = n / (decode + ours[0]), n / ours[1]
    print(
        f"transferkit ({precision}, channels_last, uint8 decoded once, batch {bs}): decode {decode:.1f}s, epoch1 "
        f"{ours[0]:.1f}s -> first epoch incl. decode {t1:.2f} img/s, epoch2 {ours[1]:.1f}s = {t2:.2f} img/s"
    )
    tutorial_label = f"(a) tutorial loop, batch {args.baseline_batch_size}, {args.baseline_workers} workers"
    for label, base in ((tutorial_label, tutorial), (f"(b) same loop, batch {bs}, no workers", same_batch)):
        b1, b2 = n / base[0], n / base[1]
        print(f"{label} (fp32 NCHW, decode every epoch): epoch1 {base[0]:.1f}s = {b1:.2f} img/s, "
              f"epoch2 {base[1]:.1f}s = {b2:.2f} img/s")
        print(f"    ratio transferkit / {label[:3]}: first epoch (incl. decode) {t1 / b1:.2f}x   "
              f"steady-state epoch {t2 / b2:.2f}x")
    print(f"(load average now {os.getloadavg()})")


if __name__ == "__main__":
    main()
