"""The peer, side by side: fastai's standard recipe vs ``transferkit fit --strategy auto``.

In one invocation, on exactly the same training images and exactly the same held-out images:

- **fastai** (2.8): ``vision_learner`` with the same timm body, weights and preprocessing as the
  backbone card (built by transferkit's backbone factory, so mean/std, input size and
  interpolation are the card's; nothing is downloaded), fastai's defaults otherwise (its head,
  Adam, batch size 64, ``Resize`` squishing the whole image like the card, no augmentation as in
  fastai's quick start; ``--fastai-aug`` adds ``aug_transforms()``), then ``fine_tune(N)``.
  fastai's validation set is the held-out set: with its defaults (no callbacks) it only reports
  on it, it chooses nothing, and its per-epoch validation pass is part of its time, as it is for
  every fastai user.
- **transferkit**: ``transferkit fit DATA --strategy auto`` run as a user runs it (the CLI, a
  fresh cache directory), scored by the run itself on its held-out split.

Each side runs in its own subprocess with ``--threads`` threads, so imports count; its wall time
is from process start to exit (after its final score). The parent then checks that the run
scored the same images (dataset fingerprint and count), re-predicts them with the fitted run to
pair the two image by image (not timed), and prints both accuracies with 95% Wilson intervals,
the paired difference (``transferkit.stats``), both wall times and their ratio, and writes it all
to ``benchmarks/results/`` as JSON (atomically).

The split: what ``transferkit fit`` would use (``data.roles.split_roles``, as
``benchmarks/advisor.py``). hymenoptera has train/ and val/ folders: trained on train, scored on
val. flowers5 has no split: ``load_dataset``'s stratified, duplicate-safe 70/30 split (seed 0),
scored on its 1,297 test images. Training images = every image that is not scored (transferkit
carves its model-selection images out of them; fastai trains on all of them).

    uv sync --group bench
    uv run python benchmarks/peer_fastai.py --quick                        # hymenoptera subsample, 1 epoch
    uv run python benchmarks/peer_fastai.py                                # hymenoptera, fine_tune(4)
    uv run python benchmarks/peer_fastai.py --data ../shared/data/flowers5 # fine_tune(7), ~27 min on 2 cores
    uv run python benchmarks/peer_fastai.py --tk-args '--epochs 8'         # extra `transferkit fit` options
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CARD = SHARED / "weights" / "mobilenetv1_075.keras_in1k.json"
# fine_tune(N) per dataset: the epochs issue 14 measured fastai with
FINE_TUNE_EPOCHS = {"hymenoptera": 4, "flowers5": 7}
QUICK_TRAIN_PER_CLASS, QUICK_SCORED_PER_CLASS = 40, 20
FASTAI_BATCH_SIZE = 64  # fastai's default


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- the split
def benchmark_split(ds, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training images, scored images) of ``ds``: what ``transferkit fit`` scores, and the rest."""
    from transferkit import TransferClassifier
    from transferkit.cli.common import api_default
    from transferkit.data.roles import split_roles

    roles = split_roles(ds, api_default(TransferClassifier, "val_fraction"), seed)
    if not len(roles.scored):
        raise SystemExit(f"{ds.root} has no held-out split to score on.")
    return np.sort(np.concatenate([roles.train, roles.val])), roles.scored


def quick_pick(ds, train: np.ndarray, scored: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A per-class subsample of both roles for a smoke run."""
    from transferkit.data.roles import per_class_pick

    return (per_class_pick(train, ds.labels, QUICK_TRAIN_PER_CLASS, seed),
            per_class_pick(scored, ds.labels, QUICK_SCORED_PER_CLASS, seed))


def materialize(ds, train: np.ndarray, scored: np.ndarray, dest: Path) -> Path:
    """Copy the chosen images into ``dest/<split>/<class>/`` keeping each image's split, so that
    ``transferkit fit dest`` trains on ``train`` and scores exactly ``scored`` (bytes unchanged)."""
    for i in np.concatenate([train, scored]):
        src = Path(ds.sources[i])
        folder = dest / str(ds.splits[i]) / ds.classes[ds.labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, folder / f"{int(i):05d}_{src.name}")  # index prefix: names stay unique
    return dest


# ------------------------------------------------------------------------- the two sides
def run_timed(cmd: list[str], env: dict[str, str], log_path: Path) -> float:
    """Run ``cmd``; its wall time from spawn to exit. Output goes to ``log_path``."""
    with open(log_path, "w") as fh:
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT).returncode
        seconds = time.perf_counter() - t0
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{' '.join(map(shlex.quote, cmd))} failed (exit {rc}); its output ends:\n{tail}")
    return seconds


def child_env(threads: int, work: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["HF_HUB_OFFLINE"] = "1"  # nothing may be downloaded: the card's weights are on disk
    env["FASTAI_HOME"] = str(work / "fastai-home")  # fastai writes its config there, not in $HOME
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    return env


def fastai_child(spec_path: str) -> None:
    """The fastai side (a subprocess of its own): fit, score the held-out images, write predictions."""
    spec = json.loads(Path(spec_path).read_text())
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(spec["threads"])
    from fastai.vision.all import (
        ImageDataLoaders,
        Normalize,
        Resize,
        ResizeMethod,
        accuracy,
        aug_transforms,
        set_seed,
        vision_learner,
    )
    from PIL import Image

    from transferkit.backbones import load_backbone

    phases["import"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    set_seed(spec["seed"])
    bb = load_backbone(spec["card"])  # the card's timm body and weights, as transferkit builds them
    pre = bb.preprocessing
    resample = getattr(Image.Resampling, pre.interpolation.upper())

    def card_body(pretrained: bool = True):  # fastai calls arch(pretrained=...) and cuts at the pool
        if not pretrained:
            raise ValueError("the benchmark compares pretrained bodies only")
        return bb.model

    import pandas as pd

    items = pd.DataFrame(spec["items"], columns=["fname", "label", "is_valid"])
    dls = ImageDataLoaders.from_df(
        items, path=spec["root"], fn_col="fname", label_col="label", valid_col="is_valid", bs=spec["bs"],
        item_tfms=Resize(pre.size, method=ResizeMethod.Squish, resamples=(resample, Image.Resampling.NEAREST)),
        # the card's mean/std (fastai adds none for a body it has no metadata for)
        batch_tfms=[*(aug_transforms() if spec["aug"] else []), Normalize.from_stats(list(pre.mean), list(pre.std))])
    learn = vision_learner(dls, card_body, metrics=accuracy)
    phases["setup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    learn.fine_tune(spec["epochs"])
    phases["fine_tune"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs, _ = learn.get_preds(dl=dls.valid)
    vocab = list(dls.vocab)
    predicted = [vocab[k] for k in probs.argmax(dim=1).tolist()]
    phases["score"] = time.perf_counter() - t0  # one pass over the held-out images
    Path(spec["out"]).write_text(json.dumps({
        "predictions": dict(zip(dls.valid.items["fname"].tolist(), predicted, strict=True)),
        "phases": phases, "fastai_version": __import__("fastai").__version__,
        "torch_threads": torch.get_num_threads(), "batch_size": dls.bs,
    }))


def run_fastai(ds, train, scored, data_root: Path, args, work: Path) -> dict[str, Any]:
    items = [[os.path.relpath(ds.sources[i], data_root), ds.classes[ds.labels[i]], False] for i in train]
    items += [[os.path.relpath(ds.sources[i], data_root), ds.classes[ds.labels[i]], True] for i in scored]
    # fastai drops the last incomplete training batch: keep at least one batch on tiny (quick) data
    bs = min(FASTAI_BATCH_SIZE, max(2, len(train) // 2))
    spec = {"items": items, "root": str(data_root), "card": str(args.backbone), "epochs": args.fastai_epochs,
            "threads": args.threads, "seed": args.seed, "bs": bs, "aug": args.fastai_aug,
            "out": str(work / "fastai-out.json")}
    (work / "fastai-spec.json").write_text(json.dumps(spec))
    log(f"fastai: vision_learner + fine_tune({args.fastai_epochs}) on {len(train)} images ...")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--fastai-child", str(work / "fastai-spec.json")]
    seconds = run_timed(cmd, child_env(args.threads, work), work / "fastai.log")
    out = json.loads((work / "fastai-out.json").read_text())
    by_file = out.pop("predictions")
    names = [by_file[item[0]] for item in items[len(train):]]
    return {"seconds": seconds, "pred": np.array([ds.classes.index(n) for n in names]), **out,
            "recipe": f"vision_learner(card body, defaults{', aug_transforms()' if args.fastai_aug else ''})"
                      f" + fine_tune({args.fastai_epochs})"}


def run_transferkit(ds, scored, data: Path, args, work: Path) -> dict[str, Any]:
    from transferkit import TransferClassifier
    from transferkit.io import read_json

    run_dir, cache = work / "tk-run", work / "tk-cache"
    cmd = [sys.executable, "-m", "transferkit.cli", "fit", str(data), "--backbone", str(args.backbone),
           "--strategy", "auto", "--out", str(run_dir), "--cache-dir", str(cache), "--seed", str(args.seed),
           "--quiet", *shlex.split(args.tk_args)]
    log(f"transferkit: {' '.join(map(shlex.quote, cmd[1:]))} ...")
    seconds = run_timed(cmd, child_env(args.threads, work), work / "transferkit.log")
    config, metrics = read_json(run_dir / "config.json"), read_json(run_dir / "metrics.json")["scored"]
    # the run scored the images the benchmark scores: same content, same split, same count
    if config["data"]["fingerprint"] != ds.fingerprint or metrics["split"]["n"] != len(scored):
        raise SystemExit(f"the transferkit run scored other images than the benchmark ({config['split']['text']}; "
                         f"the benchmark scores {len(scored)} of fingerprint {ds.fingerprint[:12]}).")
    # per-image predictions for the paired comparison (after the clock stopped)
    clf = TransferClassifier.load(run_dir, cache_dir=cache)
    pred = clf.predict_proba(ds.subset(scored)).argmax(axis=1)
    pred = np.array([ds.classes.index(clf.classes_[k]) for k in pred])
    advise_seconds = (config.get("advice") or {}).get("cost_seconds")
    fit_seconds = read_json(run_dir / "metrics.json")["fit_seconds"]
    return {"seconds": seconds, "pred": pred, "strategy": config["strategy"], "params": config["params"],
            "run_accuracy": metrics["accuracy"], "recipe": ("transferkit fit --strategy auto " + args.tk_args).strip(),
            # where the wall time went: advising, fitting the chosen strategy, the rest (imports, reading
            # and checking the files, scoring, writing the run)
            "phases": {"advise": advise_seconds, "fit": fit_seconds,
                       "other": seconds - (advise_seconds or 0.0) - fit_seconds}}


# ---------------------------------------------------------------------------- the report
def side_summary(y: np.ndarray, side: dict[str, Any]) -> dict[str, Any]:
    from transferkit.stats import wilson_interval

    correct = int((side["pred"] == y).sum())
    low, high = wilson_interval(correct, len(y))
    out = {k: v for k, v in side.items() if k != "pred"}
    return {**out, "accuracy": correct / len(y), "correct": correct, "n": len(y), "interval95": [low, high]}


def report(ds, train, scored, fa: dict, tk: dict, args, machine: dict) -> dict[str, Any]:
    from transferkit.stats import paired_difference, verdict

    y = ds.labels[scored]
    fastai, transferkit = side_summary(y, fa), side_summary(y, tk)
    paired = paired_difference(y, tk["pred"], fa["pred"])
    ratio = transferkit["seconds"] / fastai["seconds"]
    rows = [("fastai", fastai), ("transferkit", transferkit)]
    print(f"\n{ds.name}: trained on {len(train)} images, scored on the same {len(scored)} held-out images")
    for name, s in rows:
        lo, hi = s["interval95"]
        print(f"  {name:<12} accuracy {s['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]  wall {s['seconds']:7.1f} s  "
              f"{s['recipe']}")
    print(f"  transferkit ran {tk['strategy']} (its run reported {tk['run_accuracy']:.3f}); seconds by phase: "
          + ", ".join(f"{k} {v:.1f}" for k, v in tk["phases"].items() if v is not None))
    if abs(transferkit["accuracy"] - tk["run_accuracy"]) > 1e-9:  # the run's model re-read from disk disagrees
        print(f"  WARNING: re-predicting the held-out images with the saved run gives {transferkit['accuracy']:.3f}, "
              f"not the {tk['run_accuracy']:.3f} the run reported")
    print("  fastai seconds by phase: " + ", ".join(f"{k} {v:.1f}" for k, v in fa["phases"].items())
          + f" (+ process start and exit); fine_tune includes {args.fastai_epochs + 1} passes over the held-out images")
    print(f"  accuracy, transferkit - fastai: {100 * paired['diff']:+.1f} points "
          f"[{100 * paired['low']:+.1f}, {100 * paired['high']:+.1f}], p = {paired['p']:.3g}: "
          f"{verdict('transferkit', 'fastai', paired)}")
    print(f"  wall time, transferkit / fastai: {ratio:.3f} (fastai takes {1 / ratio:.1f}x as long)")
    goal = transferkit["accuracy"] >= fastai["accuracy"] and ratio <= 1 / 3
    print(f"  goal (accuracy at least fastai's, at most a third of its wall time): {'met' if goal else 'NOT met'}")
    print(f"  machine: {machine['summary']}")
    return {"dataset": {"path": str(args.data), "name": ds.name, "fingerprint": ds.fingerprint,
                        "train": len(train), "scored": len(scored), "quick": args.quick},
            "fastai": fastai, "transferkit": transferkit, "paired": paired,
            # image by image, for an audit or a later pairing: file (relative to the data root), true class,
            # each side's prediction (class indices into "classes")
            "classes": list(ds.classes),
            "scored_images": {"file": [os.path.relpath(ds.sources[i], ds.root) for i in scored], "label": y.tolist(),
                              "fastai": fa["pred"].tolist(), "transferkit": tk["pred"].tolist()},
            "wall_ratio_transferkit_over_fastai": ratio, "goal_met": goal, "machine": machine,
            "command": " ".join(map(shlex.quote, sys.argv)), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    load = os.getloadavg()[0]
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "loadavg_start": load,
            "summary": f"{platform.machine()} cpus={os.cpu_count()} threads={threads} torch {torch.__version__} "
                       f"loadavg {load:.1f} at start (other work beside it makes times noisy: read the ratio)"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=SHARED / "data" / "hymenoptera")
    p.add_argument("--backbone", type=Path, default=CARD, help="backbone card (both sides use it)")
    p.add_argument("--fastai-epochs", type=int, default=None,
                   help=f"N of fine_tune(N) (default per dataset: {FINE_TUNE_EPOCHS}; 1 with --quick)")
    p.add_argument("--fastai-aug", action="store_true",
                   help="add fastai's aug_transforms() (batch augmentation; the quick start has none)")
    p.add_argument("--tk-args", default="", help="extra options for `transferkit fit`, e.g. '--epochs 8'")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK_TRAIN_PER_CLASS} training and {QUICK_SCORED_PER_CLASS} held-out images "
                        "per class, fine_tune(1), transferkit --epochs 1")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/...)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, run, cache)")
    p.add_argument("--fastai-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.fastai_child:
        return args
    name = args.data.resolve().name
    if args.fastai_epochs is None:
        if args.quick:
            args.fastai_epochs = 1
        elif name in FINE_TUNE_EPOCHS:
            args.fastai_epochs = FINE_TUNE_EPOCHS[name]
        else:
            p.error(f"--fastai-epochs is needed for {name!r} (defaults exist for {sorted(FINE_TUNE_EPOCHS)}).")
    if args.quick and "--epochs" not in args.tk_args:
        args.tk_args = (args.tk_args + " --epochs 1").strip()
    if args.out is None:
        args.out = (ROOT / "benchmarks" / "results" /
                    f"peer_fastai-{name}{'-quick' if args.quick else ''}-{time.strftime('%Y-%m-%d')}.json")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.fastai_child:
        fastai_child(args.fastai_child)
        return
    import importlib.util

    if importlib.util.find_spec("fastai") is None:
        raise SystemExit("fastai is not installed here; it is a benchmark-only dependency: `uv sync --group bench`, "
                         "then `uv run python benchmarks/peer_fastai.py`.")
    from transferkit.data import load_dataset
    from transferkit.io import atomic_write_json

    machine = machine_info(args.threads)
    work = Path(tempfile.mkdtemp(prefix="tk-peer-"))
    try:
        # load_dataset reads every file once, which also warms the page cache for both sides alike
        ds = load_dataset(args.data, seed=args.seed, progress=False)
        train, scored = benchmark_split(ds, args.seed)
        data = args.data
        if args.quick:
            data = materialize(ds, *quick_pick(ds, train, scored, args.seed), work / ds.name)
            ds = load_dataset(data, seed=args.seed, progress=False)
            train, scored = benchmark_split(ds, args.seed)
        data_root = Path(ds.root)
        fa = run_fastai(ds, train, scored, data_root, args, work)
        tk = run_transferkit(ds, scored, data, args, work)
        machine["loadavg_end"] = os.getloadavg()[0]
        result = report(ds, train, scored, fa, tk, args, machine)
        atomic_write_json(args.out, result)
        log(f"written to {args.out}" + (f"; work directory {work}" if args.keep else ""))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
