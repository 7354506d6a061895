"""Lightning Fabric for a run: the device resolved by ``transferkit.runtime``, DDP under torchrun."""

from __future__ import annotations

import atexit
import os
from typing import Any

import torch

from ..runtime import resolve_device, training_precision


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _fabric_devices(device: torch.device) -> tuple[str, Any]:
    """(accelerator, devices) for Fabric: under torchrun every local process, else the one device."""
    n_local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type == "cpu":
        return "cpu", n_local
    if device.index is not None and world_size() == 1:
        return "cuda", [device.index]
    return "cuda", n_local


def make_fabric(device: str = "auto", precision: str = "auto"):
    """A launched Fabric: DDP when started by torchrun (WORLD_SIZE > 1), one device otherwise."""
    from lightning_fabric import Fabric

    dev = resolve_device(device)
    accelerator, devices = _fabric_devices(dev)
    ws = world_size()
    num_nodes = max(1, ws // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    fabric = Fabric(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy="ddp" if ws > 1 else "auto",
        precision=training_precision(precision, dev),
    )
    fabric.launch()
    if ws > 1:  # once per process, however many fits it runs
        atexit.unregister(_destroy_process_group)
        atexit.register(_destroy_process_group)
    return fabric


def _destroy_process_group() -> None:
    """Tear the process group down while the interpreter is still alive.

    Without it, gloo's worker threads outlive the interpreter at exit and a rank can abort
    ("terminate called without an active exception", SIGABRT) after its fit finished, which
    torchrun reports as a failed run. A no-op when the caller already destroyed it.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def precision_name(fabric) -> str:
    return str(getattr(fabric.strategy.precision, "precision", type(fabric.strategy.precision).__name__))
