"""Evaluation during training (sharded over ranks) and batched prediction with a trained network."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import resolve_device
from .data import ArrayData, to_input


@torch.no_grad()
def evaluate(fabric, model, data: ArrayData, batch_size: int, label_smoothing: float) -> dict[str, float]:
    """Mean loss, accuracy and balanced accuracy over ``data``, sharded over ranks without padding.

    Balanced accuracy is the mean of the per-class recalls over the classes present in ``data``
    (what model selection compares when the training classes are imbalanced).
    """
    model.eval()
    idx = np.arange(fabric.global_rank, len(data), fabric.world_size)
    num_classes = int(data.labels.max()) + 1 if len(data) else 1
    loss_sum = torch.zeros((), dtype=torch.float64, device=fabric.device)
    # per class: images, correct (summed over ranks, so every rank computes the same recalls)
    per_class = torch.zeros((2, num_classes), dtype=torch.float64, device=fabric.device)
    for s in range(0, len(idx), batch_size):
        b = idx[s : s + batch_size]
        x = fabric.to_device(torch.from_numpy(np.ascontiguousarray(data.images[b])))
        y = fabric.to_device(torch.from_numpy(data.labels[b]))
        logits = model(to_input(x)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum", label_smoothing=label_smoothing).double()
        per_class[0] += torch.bincount(y, minlength=num_classes).double()[:num_classes]
        per_class[1] += torch.bincount(y[logits.argmax(1) == y], minlength=num_classes).double()[:num_classes]
    totals = fabric.all_reduce(torch.cat([loss_sum.view(1), per_class.flatten()]), reduce_op="sum")
    loss_sum, per_class = totals[0], totals[1:].view(2, num_classes)
    n = max(1, len(data))
    present = per_class[0] > 0
    recalls = per_class[1][present] / per_class[0][present]
    return {"loss": float(loss_sum) / n, "accuracy": float(per_class[1].sum()) / n,
            "balanced_accuracy": float(recalls.mean()) if bool(present.any()) else 0.0}


@torch.no_grad()
def predict_logits(net: nn.Module, images: np.ndarray, batch_size: int = 64, device: str = "auto") -> np.ndarray:
    """Logits (N, C) float32 for uint8 images (N,3,H,W); fp32, eval mode, batched."""
    dev = resolve_device(device)
    net = net.to(dev).eval()
    out = []
    for s in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(dev)
        out.append(net(to_input(x)).float().cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()

