"""A synthetic, complete ``result`` dict (every section of the schema filled) for tests and demos.

The numbers are made up but shaped like a real run: scratch learns slowly, the probe is fitted
in one go, partial fine-tuning wins, full fine-tuning ends slightly below scratch (negative
transfer), and the data-size curves cross.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CLASSES = ["cat", "dog", "horse", "<b>bird & co</b>"]


def _history(accs: list[float], loss0: float, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for i, acc in enumerate(accs, start=1):
        loss = loss0 * (0.75**i) + 0.05 * rng.random()
        out.append(
            {
                "epoch": i,
                "train_loss": round(loss, 4),
                "val_loss": round(loss * 1.1, 4),
                "val_acc": round(min(1.0, acc + 0.01), 4),
                "monitor_acc": acc,
                "lr": 1e-3,
                "seconds": 1.5,
            }
        )
    return out


def _metrics(acc: float, seed: int, n_per_class: int = 38) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    c = len(CLASSES)
    cm = np.zeros((c, c), dtype=int)
    for i in range(c):
        right = int(round(acc * n_per_class))
        cm[i, i] = right
        wrong = rng.multinomial(n_per_class - right, [1 / (c - 1)] * (c - 1))
        cm[i, [j for j in range(c) if j != i]] = wrong
    per_class = {}
    for i, name in enumerate(CLASSES):
        tp = cm[i, i]
        prec = tp / max(1, cm[:, i].sum())
        rec = tp / max(1, cm[i].sum())
        per_class[name] = {
            "precision": float(prec),
            "recall": float(rec),
            "f1": float(2 * prec * rec / max(1e-9, prec + rec)),
            "support": int(cm[i].sum()),
        }
    accuracy = float(np.trace(cm) / cm.sum())
    return {
        "accuracy": accuracy,
        "balanced_accuracy": accuracy,
        "macro_f1": float(np.mean([v["f1"] for v in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def example_result() -> dict[str, Any]:
    """A full result following the schema documented in ``transferkit.report.html``."""
    histories = {
        "linear": [{"epoch": 1, "train_loss": None, "val_loss": None, "val_acc": 0.86, "monitor_acc": 0.85}],
        "partial": _history([0.80, 0.87, 0.90, 0.92, 0.93, 0.94, 0.94, 0.935], 1.2, 1),
        "full": _history([0.45, 0.52, 0.57, 0.60, 0.62, 0.63, 0.625, 0.63], 1.4, 2),
        "scratch": _history([0.30, 0.38, 0.46, 0.52, 0.57, 0.61, 0.64, 0.66], 1.6, 3),
    }
    final = {"linear": 0.85, "partial": 0.94, "full": 0.63, "scratch": 0.66}
    seconds = {"linear": 3.2, "partial": 41.0, "full": 55.3, "scratch": 52.8}
    strategies = {
        name: {
            "metrics": _metrics(final[name], seed=i),
            "history": histories[name],
            "seconds": seconds[name],
            "params": {"epochs": len(histories[name]), "lr": 0.001} if name != "linear" else {"C": 1.0},
        }
        for i, name in enumerate(histories)
    }
    from .benefit import transfer_benefit

    return {
        "title": "transferkit report — pets <demo>",
        "backbone": {
            "name": "mobilenetv2_035",
            "spec": "../shared/weights/mobilenetv2_035.keras_in1k.json",
            "weights_hash": "3f1c2a9e" * 8,
            "pretrained": True,
            "input_size": [3, 224, 224],
        },
        "data": {
            "name": "pets",
            "path": "/data/pets & friends",
            "fingerprint": "a1b2c3d4e5f60718",
            "n_images": 620,
            "classes": CLASSES,
            "counts": {"train": {c: 120 for c in CLASSES}, "test": {c: 38 for c in CLASSES}},
            "skipped": 2,
        },
        "split": {
            "train": "train split minus a stratified 15% val",
            "val": "stratified 15% of train (epoch and hyper-parameter choice)",
            "scored": "test",
            "origin": "stratified-dedup seed=0 test=0.25",
            "n_train": 408,
            "n_scored": 152,
        },
        "seed": 0,
        "versions": {
            "python": "3.11.7",
            "torch": "2.5.1",
            "timm": "1.0.11",
            "transferkit": "0.1.0",
            "sklearn": "1.5.2",
        },
        "command": ["transferkit", "run", "/data/pets & friends", "--backbone", "mobilenetv2_035"],
        "created": "2025-01-01T12:00:00+00:00",
        "budget": {"epochs": 8},
        "strategies": strategies,
        "benefit": transfer_benefit({n: s["history"] for n, s in strategies.items()}),
        "data_size": {
            "linear": {5: 0.62, 10: 0.71, 25: 0.79, 50: 0.83, "all": 0.85},
            "partial": {5: 0.48, 10: 0.60, 25: 0.77, 50: 0.88, "all": 0.94},
        },
        "advisor": {
            "strategy": "partial",
            "layer": "pool",
            "frozen_stages": 3,
            "reasons": [
                "120 images per class is a medium-sized dataset for this backbone.",
                "Similarity to the source data is high (0.81): early features transfer as they are.",
                "The probe at stage4 is within 2 points of pool: cut at pool.",
            ],
            "table_rule": "medium data x similar data -> fine-tune the top stages",
            "similarity": {
                "summary": "similar to ImageNet (0.81 of 1)",
                "signals": {
                    "bn_similarity": 0.81,
                    "source_top1_confidence": 0.42,
                    "probe_gain_over_pixels": 0.37,
                    "domain_gap_fid_like": -0.12,
                },
                "per_layer": {
                    "stem": {"probe_acc": 0.41, "bn_similarity": 0.93},
                    "stage1": {"probe_acc": 0.52, "bn_similarity": 0.9},
                    "stage2": {"probe_acc": 0.63, "bn_similarity": 0.86},
                    "stage3": {"probe_acc": 0.74, "bn_similarity": 0.82},
                    "stage4": {"probe_acc": 0.83, "bn_similarity": 0.77},
                    "pool": {"probe_acc": 0.85, "bn_similarity": 0.74},
                },
            },
        },
        "best_strategy": "partial",
    }


def example_misclassified(n: int = 10, size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Random-texture uint8 images (N,3,H,W) with made-up true / predicted labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    true = [int(i % len(CLASSES)) for i in range(n)]
    pred = [int((i + 1) % len(CLASSES)) for i in range(n)]
    return {"images": images, "true": true, "pred": pred, "strategy": "partial"}


def _draw(labels: np.ndarray, accuracy: float, rng: np.random.Generator) -> list[int]:
    """Predictions on ``labels`` that get ``accuracy`` of them right (the wrong ones shifted by one class)."""
    pred = labels.copy()
    wrong = rng.choice(len(labels), size=int(round((1 - accuracy) * len(labels))), replace=False)
    pred[wrong] = (pred[wrong] + 1) % len(CLASSES)
    return pred.tolist()


def example_repeated_result(repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """``example_result`` as ``compare --repeats`` writes it: per-image predictions of every draw.

    Made-up draws around the example's accuracies: partial is far above scratch (a real gain),
    full is 3 points below it (within noise on 152 images), and on the data-size curves linear
    leads scratch with few images and scratch gets close by 50 per class.
    """
    rng = np.random.default_rng(seed)
    result = example_result()
    labels = np.repeat(np.arange(len(CLASSES)), 38)
    result["repeats"] = repeats
    result["scored_labels"] = labels.tolist()
    for s in result["strategies"].values():
        acc = s["metrics"]["accuracy"]
        s["draws"] = [{"seed": r, "accuracy": acc, "pred": _draw(labels, acc, rng),
                       "history": [{**row, "monitor_acc": row["monitor_acc"] + rng.normal(0, 0.01)}
                                   for row in s["history"]]}
                      for r in range(repeats)]
    curves = {"linear": {5: 0.62, 10: 0.71, 25: 0.79, 50: 0.83},
              "scratch": {5: 0.30, 10: 0.45, 25: 0.70, 50: 0.82}}
    result["data_size"] = {n: {**c, "all": result["strategies"][n]["metrics"]["accuracy"]} for n, c in curves.items()}
    result["data_size_draws"] = {name: {str(k): [_draw(labels, a, rng) for _ in range(repeats)] for k, a in c.items()}
                                 for name, c in curves.items()}
    result["data_size_all_per_class"] = 120
    result.pop("benefit", None)
    return result
