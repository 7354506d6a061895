"""The state of one training run, shared by the loop (``loop``) and its epoch-0 candidate (``start``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import Checkpointer
from .config import TrainConfig
from .data import EpochSampler, UInt8ImageDataset
from .freezing import Groups

log = logging.getLogger("transferkit.engine")


@dataclass
class Run:
    """One training run: what ``_setup`` builds, and the state the epochs update and checkpoint."""

    fabric: Any
    config: TrainConfig
    net: nn.Module
    groups: Groups
    optimizer: torch.optim.Optimizer
    optimizer_f: Any  # the Fabric-wrapped optimizer
    scheduler: Any
    lr_of: dict[str, float]
    dataset: UInt8ImageDataset
    sampler: EpochSampler
    loader: Any
    per_rank: int
    ckpt: Checkpointer
    run_dir: Path
    history: list[dict[str, Any]]
    criterion: nn.Module
    events: list[str] = field(default_factory=list)
    micro_splits: int = 1
    model: Any = None  # the Fabric-wrapped module, rebuilt when the frozen set changes
    frozen: list[str] | None = None
    start_epoch: int = 0
    step: int = 0
    best_acc: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stale: int = 0
    resumed_from: int | None = None
    stopped_early: bool = False
    start_val_acc: float | None = None
    start_margin: float = 0.0

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.groups]

    def event(self, msg: str) -> None:
        self.events.append(msg)
        log.warning(msg) if "out of memory" in msg else log.info(msg)
