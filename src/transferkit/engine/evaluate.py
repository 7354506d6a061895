"""Evaluation during training (sharded over ranks) and batched prediction with a trained network."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import resolve_device
from .data import ArrayData, to_input


@torch.no_grad()
def evaluate(fabric, model, data: ArrayData, batch_size: int, label_smoothing: float) -> tuple[float, float]:
    """(mean loss, accuracy) over ``data``, sharded over ranks without padding and summed."""
    model.eval()
    idx = np.arange(fabric.global_rank, len(data), fabric.world_size)
    loss_sum = torch.zeros((), dtype=torch.float64, device=fabric.device)
    correct = torch.zeros((), dtype=torch.float64, device=fabric.device)
    for s in range(0, len(idx), batch_size):
        b = idx[s : s + batch_size]
        x = fabric.to_device(torch.from_numpy(np.ascontiguousarray(data.images[b])))
        y = fabric.to_device(torch.from_numpy(data.labels[b]))
        logits = model(to_input(x)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum", label_smoothing=label_smoothing).double()
        correct += (logits.argmax(1) == y).sum().double()
    totals = fabric.all_reduce(torch.stack([loss_sum, correct]), reduce_op="sum")
    n = max(1, len(data))
    return float(totals[0]) / n, float(totals[1]) / n


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

