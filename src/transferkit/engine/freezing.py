"""Parameter groups, freezing, the BatchNorm policy, the optimizer and the learning-rate schedule.

Freezing is a pure function of the epoch (``TrainConfig.frozen_groups``); :func:`set_frozen`
only applies it, so a resumed run cannot re-freeze or forget to unfreeze a layer (Lightning's
``BaseFinetuning`` resume bug).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import HEAD, TrainConfig

Groups = list[tuple[str, list[nn.Parameter]]]


def network_groups(net: nn.Module) -> Groups:
    """Named parameter groups in order: the body groups of ``net.backbone_groups()`` then "head".

    Body parameters the backbone does not list are added to its last group, so none is missed.
    """
    groups = [(name, list(params)) for name, params in net.backbone_groups()]
    head = list(net.head.parameters())
    seen = {id(p) for _, ps in groups for p in ps} | {id(p) for p in head}
    rest = [p for p in net.parameters() if id(p) not in seen]
    if rest:
        if groups:
            groups[-1] = (groups[-1][0], groups[-1][1] + rest)
        else:
            groups.append(("body", rest))
    groups = [(n, ps) for n, ps in groups if ps]
    return groups + [(HEAD, head)]


def set_frozen(groups: Groups, frozen: list[str]) -> None:
    frozen_set = set(frozen)
    for name, params in groups:
        for p in params:
            p.requires_grad_(name not in frozen_set)


def apply_bn_policy(net: nn.Module, policy: str) -> None:
    """After ``net.train()``, decide which BatchNorm layers keep their running statistics.

    - "eval": every BatchNorm stays in eval mode (its statistics fixed, its affine parameters
      still trained where not frozen). The default for pretrained networks: with small batches
      of a new dataset, batch statistics differ from the running ones the pretrained weights and
      the probe-initialised head were fitted to, and the first steps destroy that starting point
      (measured on digits: 97.3% with running statistics, 8.2% with batch statistics).
    - "frozen": only BatchNorm layers whose parameters are all frozen stay in eval mode.
    - "train": every BatchNorm uses batch statistics (training from scratch).
    """
    if policy == "train":
        return
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters(recurse=False))
            if policy == "eval" or (ps and not any(p.requires_grad for p in ps)):
                m.eval()


@torch.no_grad()
def reestimate_bn_statistics(net: nn.Module, images, *, batch_size: int = 32, device: str = "auto") -> int:
    """AdaBN (Li et al. 2016): replace every BatchNorm's running statistics by those of ``images``.

    ``images`` is uint8 (N,3,H,W), e.g. the training images without augmentation. Each BatchNorm
    accumulates a cumulative average (momentum None) over the batches, in training mode, while
    everything else stays in eval mode and no weight changes. Returns the number of layers reset.
    """
    import numpy as np

    from ..runtime import resolve_device
    from .data import to_input

    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or len(images) < 2:  # one image has no variance to measure
        return 0
    dev = resolve_device(device)
    first = next(net.parameters())
    orig_device, was_training = first.device, net.training
    momenta = [m.momentum for m in bns]
    net.to(dev).eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(dev)
            if x.shape[0] > 1:  # a batch of one has no variance to measure
                net(to_input(x))
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        net.to(orig_device).train(was_training)
    return len(bns)


class WarmupCosine:
    """LR factor: linear warm-up over ``warmup`` steps from ``start``, then cosine to 0 at ``total``.

    An object (not a lambda) so LambdaLR's state_dict stores and restores its fields.
    """

    def __init__(self, total: int, warmup: int, start: int = 0):
        self.total, self.warmup, self.start = int(total), int(warmup), int(start)

    def __call__(self, step: int) -> float:
        s = step - self.start
        if s < 0:
            return 0.0
        if s < self.warmup:
            return (s + 1) / (self.warmup + 1)
        span = max(1, self.total - self.start - self.warmup)
        progress = min(1.0, (s - self.warmup) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(groups: Groups, config: TrainConfig, pretrained_body: bool = True):
    """(optimizer with one param group per named group, {group name: its base lr})."""
    lr_of = {}
    pg = []
    for name, params in groups:
        lr = config.lr if (name == HEAD or not pretrained_body) else config.lr * config.body_lr_ratio
        lr_of[name] = lr
        pg.append({"params": params, "lr": lr, "name": name})
    if config.optimizer == "adamw":
        opt = torch.optim.AdamW(pg, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(pg, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    return opt, lr_of


def build_scheduler(optimizer, names: list[str], config: TrainConfig, steps_per_epoch: int):
    """LambdaLR with one WarmupCosine per group; with ``head_epochs`` the body groups start after them."""
    total_steps = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    lambdas = [
        WarmupCosine(
            total_steps,
            warmup,
            0 if (n == HEAD or config.head_epochs == 0) else config.head_epochs * steps_per_epoch,
        )
        for n in names
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
