"""Would bf16 feature extraction be safe, per backbone? fp32 vs each bf16 option on the same splits.

For each backbone, dataset and seed, the dataset's own stratified, duplicate-safe split
(``load_dataset(..., seed=s)``; a tree with split folders keeps its folders, so one seed is enough
there) is used once per extraction: exact fp32 (``runtime="auto"``: the inference runtime, within 1e-4
of PyTorch eager) and each bf16 option (PyTorch autocast + channels_last; OpenVINO's bf16 when it is
installed). The features go through the same linear probe as ``strategy="linear"`` (standardise,
cross-validated multinomial logistic regression over the same C grid), scored on the held-out part.
Prints the accuracies, the paired difference per split, its mean and standard error, the features'
relative error (max |bf16 - fp32| / max |fp32|), and per backbone a verdict per bf16 option: safe only
when the mean difference stays within 0.3 points on every dataset (the rule in ``transferkit.runtime``
for making bf16 a default; it stays opt-in either way).

    .venv/bin/python benchmarks/precision.py                                  # both cards, hymenoptera + flowers5
    .venv/bin/python benchmarks/precision.py --data ../shared/data/flowers5 --seeds 0,1,2,3,4
    .venv/bin/python benchmarks/precision.py --seeds 0 --limit 400            # quick
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--backbone", nargs="+", default=[str(SHARED / "weights" / "mobilenetv1_075.keras_in1k.json"),
                                                      str(SHARED / "weights" / "mobilenetv2_035.keras_in1k.json")])
    ap.add_argument("--layer", default="pool")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="split seeds (datasets without split folders)")
    ap.add_argument("--limit", type=int, default=None, help="N evenly spaced images per dataset (quick)")
    ap.add_argument("--store", type=Path, default=None, help="feature store (default: a temporary folder)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import tempfile

    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset
    from transferkit.features import extract_features
    from transferkit.features.runtimes import relative_error
    from transferkit.runtime import describe, resolve_device, resolve_extract_runtime, runtime_available

    cpu = resolve_device("cpu")
    options = [("bf16", "torch")] + ([("bf16", "openvino")] if runtime_available("openvino") else [])
    exact = ("fp32", resolve_extract_runtime("auto", cpu, "fp32"))
    print(f"layer {args.layer}; {describe(cpu, 'fp32', exact[1])}; bf16 options: "
          + ", ".join(f"{p} {r}" for p, r in options))
    # A fresh cache's features/ folder: the decoded images go next to it (CacheLayout), not into /tmp.
    store = args.store or Path(tempfile.mkdtemp(prefix="tk-precision-")) / "features"
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    verdicts = []
    for spec in args.backbone:
        bb = load_backbone(spec)
        worst = {opt: 0.0 for opt in options}
        coarsest = 0.0  # points one held-out image is worth, on the smallest held-out set
        for data in args.data:
            diffs: dict[tuple[str, str], list[float]] = {opt: [] for opt in options}
            errors: dict[tuple[str, str], float] = {opt: 0.0 for opt in options}
            for seed in seeds:
                ds = load_dataset(str(data), seed=seed, progress=False)
                if args.limit and args.limit < len(ds):
                    ds = ds.subset(np.linspace(0, len(ds) - 1, args.limit).round().astype(int))
                train = np.flatnonzero(ds.splits == "train")
                test = np.flatnonzero(ds.splits != "train")
                coarsest = max(coarsest, 100 / len(test))
                acc, feats = {}, {}
                for prec, runtime in (exact, *options):
                    fs = extract_features(bb, ds, [args.layer], store_dir=store, precision=prec, runtime=runtime,
                                          device="cpu", progress=False)
                    feats[prec, runtime] = fs.features[args.layer]
                    acc[prec, runtime] = probe_accuracy(feats[prec, runtime], ds.labels, train, test,
                                                        len(ds.classes), seed)[0]
                line = [f"{bb.name} {data.name} seed {seed}: train {len(train)} -> held-out {len(test)}: "
                        f"fp32 {acc[exact]:.4f}"]
                for opt in options:
                    diffs[opt].append(100 * (acc[opt] - acc[exact]))
                    errors[opt] = max(errors[opt], relative_error(feats[opt], feats[exact]))
                    line.append(f"{opt[0]} {opt[1]} {acc[opt]:.4f} ({diffs[opt][-1]:+.2f})")
                print("  ".join(line), flush=True)
                if not ds.split_origin.startswith("stratified"):
                    break  # fixed split folders: other seeds give the same split
            for opt in options:
                d = np.array(diffs[opt])
                se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
                worst[opt] = max(worst[opt], abs(float(d.mean())))
                print(f"{bb.name} {data.name} {opt[0]} {opt[1]}: mean bf16 - fp32 {d.mean():+.2f} points "
                      f"(standard error {se:.2f}, {len(d)} split(s)), feature error {errors[opt]:.3f} relative: "
                      f"{'within' if abs(d.mean()) <= RULE_POINTS else 'OUTSIDE'} the {RULE_POINTS} point rule",
                      flush=True)
        for opt in options:
            safe = "would be safe" if worst[opt] <= RULE_POINTS else "is NOT safe"
            if coarsest > RULE_POINTS:
                safe += f" -- but one held-out image is {coarsest:.2f} points here: too few images to decide"
            verdicts.append(f"{bb.name}: {opt[0]} ({opt[1]}) {safe} (largest mean |difference| {worst[opt]:.2f} "
                            f"points over {len(args.data)} dataset(s))")
    print("\n" + "\n".join(verdicts))


if __name__ == "__main__":
    main()
