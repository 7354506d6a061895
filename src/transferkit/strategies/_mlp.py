"""A small MLP head trained on (standardised) stored features: AdamW, mini-batches, early stopping.

Shared by ``hidden`` (pooled final features) and ``intermediate --hidden 512,256`` (an earlier
layer). The network is ``backbones.build_head`` so ``FeatureModel.load`` rebuilds it exactly.
Deterministic: one ``torch.Generator`` seeded with ``seed`` drives initialisation, shuffling and
dropout, so the same inputs and seed give the same head.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import build_head
from ..errors import ConfigError


def train_mlp_head(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
    hidden: tuple[int, ...] = (512,),
    dropout: float = 0.5,
    epochs: int = 100,
    lr: float = 1e-3,
    seed: int = 0,
    *,
    num_classes: int | None = None,
    batch_size: int = 64,
    weight_decay: float = 1e-2,
    patience: int | None = 15,
    label_smoothing: float = 0.0,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Train ``build_head(D, C, hidden, dropout)`` on features; returns (head in eval mode, history).

    With validation data the weights of the epoch with the best val accuracy (ties: lowest val
    loss) are restored, and training stops after ``patience`` epochs without improvement.
    Without it, all ``epochs`` run and the last weights are kept. The learning rate follows a
    cosine decay to 0 over ``epochs``. History rows: epoch, train_loss, train_acc, val_loss,
    val_acc, lr, seconds.
    """
    X_train = np.asarray(X_train, dtype=np.float32)
    y_train = np.asarray(y_train, dtype=np.int64)
    if X_train.ndim != 2 or len(X_train) != len(y_train) or len(X_train) == 0:
        raise ConfigError(
            f"train_mlp_head needs X_train (N, D) and y_train (N,) with N > 0; got {X_train.shape} and {y_train.shape}."
        )
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"The 'epochs' parameter must be an integer >= 1. Got {epochs!r} instead.")
    if not (isinstance(lr, int | float) and lr > 0):
        raise ConfigError(f"The 'lr' parameter must be a positive number. Got {lr!r} instead.")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"The 'dropout' parameter must be in [0, 1). Got {dropout!r} instead.")
    num_classes = int(num_classes if num_classes is not None else y_train.max() + 1)
    has_val = X_val is not None and y_val is not None and len(y_val) > 0

    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        head = build_head(X_train.shape[1], num_classes, tuple(hidden), float(dropout))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    xt, yt = torch.from_numpy(X_train), torch.from_numpy(y_train)
    if has_val:
        xv = torch.from_numpy(np.asarray(X_val, dtype=np.float32))
        yv = torch.from_numpy(np.asarray(y_val, dtype=np.int64))

    history: list[dict[str, Any]] = []
    best: tuple[float, float] | None = None
    best_state = None
    stale = 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        head.train()
        perm = torch.randperm(len(xt), generator=gen)
        loss_sum, correct = 0.0, 0
        for s in range(0, len(perm), batch_size):
            b = perm[s : s + batch_size]
            logits = _forward(head, xt[b], gen)
            loss = F.cross_entropy(logits, yt[b], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(b)
            correct += int((logits.argmax(1) == yt[b]).sum())
        lr_now = opt.param_groups[0]["lr"]
        sched.step()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / len(xt),
            "train_acc": correct / len(xt),
            "val_loss": None,
            "val_acc": None,
            "lr": lr_now,
        }
        if has_val:
            head.eval()
            with torch.no_grad():
                lv = head(xv)
                row["val_loss"] = float(F.cross_entropy(lv, yv))
                row["val_acc"] = float((lv.argmax(1) == yv).double().mean())
            key = (row["val_acc"], -row["val_loss"])
            if best is None or key > best:
                best, stale = key, 0
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            else:
                stale += 1
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if has_val and patience is not None and stale >= patience:
            break
    if best_state is not None:
        head.load_state_dict(best_state)
    return head.eval(), history


def _forward(head: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Forward in train mode with dropout masks drawn from ``gen`` (reproducible, thread-independent)."""
    if not isinstance(head, nn.Sequential):
        return head(x)
    for layer in head:
        if isinstance(layer, nn.Dropout) and layer.p > 0:
            keep = torch.rand(x.shape, generator=gen) >= layer.p
            x = x * keep / (1.0 - layer.p)
        else:
            x = layer(x)
    return x
