"""Feature-extraction throughput: a plain PyTorch loop vs transferkit's extract_features.

For each dataset, in one run, with the same model (the backbone card's weights) and the same files:

(a) plain loop, written as the PyTorch transfer-learning tutorial writes it: torchvision
    ``ImageFolder`` + ``Resize((224, 224))`` + ``ToTensor`` + ``Normalize`` per image, a
    ``DataLoader`` (the tutorial's batch_size=4, num_workers=4 unless told otherwise), fp32, NCHW,
    model in eval mode under ``torch.no_grad``; it computes the same pooled features;
(b) ``transferkit.features.extract_features`` on a cold start: fresh store dir and fresh decode
    cache (``load_dataset`` is timed separately: it reads and checks every file once);
(c) the same ``extract_features`` call again (warm store: no decoding, no network).

(b) is split, timed inside the run, into decoding, building the engine (ONNX export + compile +
exactness check; a later run with the same backbone and cut points reads the cached graph) and the
rest (forward pass and store).

Before that, the backend table: the same model's pure forward pass (pooled features) on pre-decoded
batches of the first dataset's images, decoding excluded, for every backend: PyTorch eager NCHW and
channels_last fp32, ONNX Runtime and OpenVINO fp32 (the engines ``extract_features`` runs), and the
bf16 options (PyTorch autocast channels_last, OpenVINO bf16), each with its images/s (interleaved
repetitions, so a busy machine slows them alike) and its max abs / relative difference from eager
fp32. The best exact (fp32) figure is the bound (b) is measured against: extraction can't beat the
forward pass alone.

Prints images/second, the ratios (b)/(a) against the 3x target and (c)/(b), (b) as a fraction of
the bound, the split of (b) into decode and forward, and the machine. Wall-clock numbers are never
asserted; compare ratios from the same run.

    .venv/bin/python benchmarks/extract.py [--data DIR ...] [--backbone CARD] [--limit N] [--runtime R]
    .venv/bin/python benchmarks/extract.py --limit 200 --table-images 64     # quick
"""

from __future__ import annotations

import argparse
import contextlib
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
TARGET = 3.0  # (b)/(a): issue 14's extraction target, at exact fp32


def backend_table(spec: str, images: np.ndarray, batch_size: int, reps: int, cache: Path) -> list[dict]:
    """Pure forward ("pool" features) per backend on pre-decoded uint8 ``images``, decoding excluded."""
    from transferkit.backbones import load_backbone
    from transferkit.features.runtimes import TorchEngine, open_engine, relative_error
    from transferkit.runtime import runtime_available

    cpu = torch.device("cpu")
    nchw, cl = load_backbone(spec), load_backbone(spec)  # two copies: each keeps its memory format
    cl.model.to(memory_format=torch.channels_last)
    rows = [("PyTorch eager, NCHW", "fp32", lambda x, layers: _eager_nchw(nchw, x, layers)),
            ("PyTorch eager, channels_last", "fp32", TorchEngine(cl, "avg", cpu, "fp32"))]
    with contextlib.ExitStack() as stack:
        for runtime, label in (("onnxruntime", "ONNX Runtime"), ("openvino", "OpenVINO")):
            if runtime_available(runtime):
                rows.append((label, "fp32", stack.enter_context(open_engine(
                    nchw, ["pool"], "avg", runtime=runtime, device=cpu, precision="fp32", cache_dir=cache,
                    forced=True))))
        rows.append(("PyTorch eager, channels_last, autocast", "bf16", TorchEngine(cl, "avg", cpu, "bf16")))
        if runtime_available("openvino"):
            rows.append(("OpenVINO", "bf16", stack.enter_context(open_engine(
                nchw, ["pool"], "avg", runtime="openvino", device=cpu, precision="bf16", cache_dir=cache,
                forced=True))))
        batches = [np.ascontiguousarray(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        outs, seconds = {}, {(label, prec): 0.0 for label, prec, _ in rows}
        for label, prec, f in rows:  # warm-up, and the features compared
            outs[label, prec] = np.concatenate([f(x, ["pool"])["pool"] for x in batches])
        for _ in range(reps):  # interleaved: a busy machine slows every backend alike
            for label, prec, f in rows:
                t0 = time.perf_counter()
                for x in batches:
                    f(x, ["pool"])
                seconds[label, prec] += time.perf_counter() - t0
    ref = outs["PyTorch eager, NCHW", "fp32"]
    table = []
    for label, prec, _ in rows:
        got = outs[label, prec]
        cos = np.sum(got * ref, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1) + 1e-30)
        table.append({"backend": label, "precision": prec, "img_s": reps * len(images) / seconds[label, prec],
                      "max_abs": float(np.abs(got - ref).max()), "rel": relative_error(got, ref),
                      "min_cos": float(cos.min())})
    return table


def _eager_nchw(bb, x: np.ndarray, layers) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        return {k: v.numpy() for k, v in bb.forward_layers(torch.from_numpy(x), list(layers)).items()}


def print_table(table: list[dict], n: int, batch_size: int, reps: int) -> float:
    """Prints the table; returns the bound: the best exact (fp32, within 1e-4 relative) images/s."""
    print(f"\nbackends: pure forward, 'pool' features, {n} pre-decoded images in batches of {batch_size}, "
          f"{reps} interleaved repetitions (decoding excluded)")
    print(f"  {'backend':40s} {'prec':5s} {'img/s':>8s} {'x eager':>8s} {'max abs diff':>13s} {'rel':>9s} "
          f"{'min cos':>9s}")
    base = table[0]["img_s"]
    for r in table:
        print(f"  {r['backend']:40s} {r['precision']:5s} {r['img_s']:8.1f} {r['img_s'] / base:7.2f}x "
              f"{r['max_abs']:13.2e} {r['rel']:9.1e} {r['min_cos']:9.6f}")
    exact = [r for r in table if r["precision"] == "fp32" and r["rel"] <= 1e-4]
    best = max(exact, key=lambda r: r["img_s"])
    print(f"  bound (best exact fp32, decoding excluded): {best['img_s']:.1f} img/s ({best['backend']})")
    return best["img_s"]


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


@contextlib.contextmanager
def _timed_stages():
    """Seconds extract_features spends decoding (the whole dataset into the decode cache) and opening
    its engine (ONNX export, compile, exactness check), timed where it calls them."""
    import transferkit.features.extract as ex

    spent = {"decode": 0.0, "engine": 0.0}
    real_decode, real_open = ex._decode, ex.open_engine

    def decode(*a, **k):
        t0 = time.perf_counter()
        try:
            return real_decode(*a, **k)
        finally:
            spent["decode"] += time.perf_counter() - t0

    @contextlib.contextmanager
    def open_engine(*a, **k):
        t0 = time.perf_counter()
        with real_open(*a, **k) as engine:
            spent["engine"] += time.perf_counter() - t0
            yield engine

    ex._decode, ex.open_engine = decode, open_engine
    try:
        yield spent
    finally:
        ex._decode, ex.open_engine = real_decode, real_open


def transferkit_run(bb, data: Path, limit: int | None, cache: Path, batch_size: int, precision: str, runtime: str):
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
    with _timed_stages() as spent:  # measured inside the cold run, not in separate probes
        for _ in range(2):  # cold, then warm
            t0 = time.perf_counter()
            fs = extract_features(bb, ds, ["pool"], store_dir=store, batch_size=batch_size, precision=precision,
                                  progress=False, runtime=runtime)
            runs.append((time.perf_counter() - t0, fs))
    t_decode, t_engine = spent["decode"], spent["engine"]
    return len(ds), n_loaded, t_load, runs, t_decode, t_engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", type=Path,
                    default=[SHARED / "data" / "hymenoptera", SHARED / "data" / "flowers5"])
    ap.add_argument("--backbone", default=str(SHARED / "weights" / "mobilenetv1_075.keras_in1k.json"))
    ap.add_argument("--limit", type=int, default=None, help="use the first N images of each dataset")
    ap.add_argument("--batch-size", type=int, default=None, help="transferkit batch size (default: its own)")
    ap.add_argument("--precision", default="auto", help="transferkit precision: auto, fp32, bf16")
    ap.add_argument("--runtime", default="auto", help="transferkit runtime: auto, torch, openvino, onnxruntime")
    ap.add_argument("--baseline-batch-size", type=int, default=4, help="plain loop (tutorial: 4)")
    ap.add_argument("--baseline-workers", type=int, default=4, help="plain loop DataLoader workers (tutorial: 4)")
    ap.add_argument("--table-images", type=int, default=96, help="images per backend-table pass (0: no table)")
    ap.add_argument("--reps", type=int, default=3, help="backend-table repetitions")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset
    from transferkit.features import default_batch_size
    from transferkit.runtime import describe, resolve_device, resolve_extract_runtime, resolve_precision

    bb = load_backbone(args.backbone)
    dev = resolve_device("auto")
    prec = resolve_precision(args.precision, dev)
    runtime = resolve_extract_runtime(args.runtime, dev, prec)
    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()} "
          f"torch_threads={torch.get_num_threads()} loadavg={os.getloadavg()[0]:.1f}")
    print(f"torch {torch.__version__}, python {platform.python_version()}, device: {describe(dev, prec, runtime)}")
    bs = args.batch_size or default_batch_size(dev)
    print(f"backbone: {bb.name} input {tuple(bb.preprocessing.input_size)}; transferkit batch={bs} "
          f"precision={prec} runtime={runtime}; plain loop batch={args.baseline_batch_size} "
          f"workers={args.baseline_workers} fp32")
    bound = float("nan")
    if args.table_images:
        first = load_dataset(str(args.data[0]), progress=False)
        first = first.subset(np.arange(min(args.table_images, len(first))))
        images = first.decode(bb.preprocessing.size, bb.preprocessing.interpolation, None, progress=False)
        with tempfile.TemporaryDirectory(prefix="tk-bench-graphs-") as graphs:
            table = backend_table(args.backbone, images, bs, args.reps, Path(graphs))
        bound = print_table(table, len(images), bs, args.reps)
    totals = {"a": [0, 0.0], "b": [0, 0.0], "c": [0, 0.0], "load": [0, 0.0]}
    for data in args.data:
        cache = Path(tempfile.mkdtemp(prefix="tk-bench-"))
        try:
            n_a, t_a = plain_loop(bb, data, args.limit, args.baseline_batch_size, args.baseline_workers)
            n_b, n_loaded, t_load, runs, t_dec, t_eng = transferkit_run(
                bb, data, args.limit, cache, args.batch_size, prec, args.runtime)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        (t_b, fs_b), (t_c, fs_c) = runs
        assert not fs_b.from_cache and fs_c.from_cache
        for k, n, t in (("a", n_a, t_a), ("b", n_b, t_b), ("c", n_b, t_c), ("load", n_b, t_load)):
            totals[k][0] += n
            totals[k][1] += t
        ratio = (n_b / t_b) / (n_a / t_a)
        print(f"\n{data.name}: {n_a} images (plain loop), {n_b} (transferkit; load_dataset keeps readable ones)")
        print(f"  (a) plain PyTorch loop          {n_a / t_a:9.1f} img/s  ({t_a:.2f} s)")
        t_fwd = max(t_b - t_dec - t_eng, 1e-9)
        print(f"  (b) transferkit cold            {n_b / t_b:9.1f} img/s  ({t_b:.2f} s: decode {t_dec:.2f} s "
              f"+ building the engine {t_eng:.2f} s + forward/store {t_fwd:.2f} s; {fs_b.precision}, "
              f"{fs_b.runtime})")
        print(f"  (c) transferkit warm re-run     {n_b / t_c:9.1f} img/s  ({t_c:.3f} s)")
        print(f"      load_dataset (not in b)     {n_loaded / t_load:9.1f} img/s  ({t_load:.2f} s for all "
              f"{n_loaded} images)")
        print(f"  (b)/(a) = {ratio:.2f}x (target {TARGET:.0f}x: {'met' if ratio >= TARGET else 'NOT met'})   "
              f"(b)/bound = {(n_b / t_b) / bound:.2f} (bound {bound:.1f} img/s)   "
              f"(c)/(b) re-run speed-up = {t_b / t_c:.1f}x   "
              f"(b incl. load_dataset)/(a) = {(n_b / (t_b + t_load)) / (n_a / t_a):.2f}x")
        print(f"      forward/store part of (b) alone: {n_b / t_fwd:.1f} img/s = {(n_b / t_fwd) / bound:.2f} of "
              "the bound (the engine is built once per backbone, cut points and pooling, then cached)")
    if len(args.data) > 1:
        ra, rb, rc = (totals[k][0] / totals[k][1] for k in "abc")
        rbl = totals["b"][0] / (totals["b"][1] + totals["load"][1])
        print(f"\nall datasets: (a) {ra:.1f} img/s  (b) {rb:.1f} img/s  (c) {rc:.1f} img/s  "
              f"(b)/(a) = {rb / ra:.2f}x  (c)/(b) = {rc / rb:.1f}x  (b incl. load_dataset)/(a) = {rbl / ra:.2f}x")


if __name__ == "__main__":
    main()
