"""The loop: set up, restore, then per epoch train / evaluate / save (``fit_network``).

The guarantees it keeps are listed in the package docstring (``transferkit.engine``).
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import TrainingDivergedError
from ..io import atomic_write_json, kill_point
from ..runtime import fp32_strided_depthwise
from .balance import TrainingLoss, balanced_weights
from .checkpoint import CHECKPOINT_FORMAT, Checkpointer, check_resumable, rng_state, set_rng_state, state_to_cpu
from .config import TrainConfig
from .data import ArrayData, EpochSampler, UInt8ImageDataset, to_input
from .evaluate import evaluate
from .fabric import make_fabric, precision_name
from .freezing import apply_bn_policy, build_optimizer, build_scheduler, network_groups, set_frozen
from .progress import epoch_progress
from .run import Run
from .start import StartCandidate, adopt_start, evaluate_start, margin_to_beat

# Largest micro-batch on the CPU: a MobileNet v1 training step ran at 106 img/s with 16 images and
# 82 img/s with 32 on the 2-core reference machine (bf16, channels_last): the activations of 32
# images at 112x112 no longer stay in cache. Larger batches are split and their gradients summed.
CPU_MICRO_BATCH = 16


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    epochs_run: int
    best_epoch: int | None
    best_val_acc: float | None
    stopped_early: bool
    resumed_from: int | None
    checkpoint_dir: Path
    precision: str
    events: list[str] = field(default_factory=list)
    # Selection score of the network as it started (``start_candidate``); best_epoch 0 = kept.
    start_val_acc: float | None = None
    # What best_val_acc and start_val_acc measure: "accuracy" or "balanced_accuracy".
    selection_metric: str = "accuracy"


def cpu_micro_splits(batch: int, device: torch.device) -> int:
    """Micro-batches per loaded batch: 1 on accelerators, enough for <= CPU_MICRO_BATCH on the CPU."""
    return max(1, math.ceil(batch / CPU_MICRO_BATCH)) if device.type == "cpu" else 1


# ------------------------------------------------------------------------------ the loop
def fit_network(
    net: nn.Module,
    train: ArrayData,
    val: ArrayData | None,
    config: TrainConfig,
    run_dir: str | os.PathLike[str],
    *,
    monitor: ArrayData | None = None,
    pretrained_body: bool = True,
    resume: bool = False,
    progress: bool = True,
    device: str = "auto",
    history: list[dict[str, Any]] | None = None,
    fabric=None,
    start_candidate: bool | StartCandidate = False,
    keep_going: Callable[[list[dict[str, Any]]], bool] | None = None,
    _fault: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``net`` (a TransferNet: ``backbone_groups()``, ``head``, input uint8/float 0..255).

    ``pretrained_body=False`` (scratch, pretrain) gives every group the head's lr. The network is
    trained in place; at the end it holds the best-on-val weights (or the last ones without val).
    ``history`` (e.g. ``ctx.history``) receives one dict per epoch; ``run_dir/history.json`` too.
    ``start_candidate=True`` (the pretrained strategies, whose head starts at the linear probe)
    makes the network as it starts a candidate of model selection ("epoch 0"): when no epoch beats
    it on the selection images, the run ends with the starting weights, so fine-tuning never ends
    below where it started on those images. A :class:`StartCandidate` is epoch 0 with the caller's
    weights and score instead (training still starts from ``net`` as given).
    ``keep_going(history)``, called after each epoch is saved, stops the run there when it returns
    False (the checkpoint stays, so ``resume=True`` with the same config continues the schedule).
    ``_fault(epoch, batch)`` is a test hook called before every batch.
    """
    run = _setup(net, train, config, Path(run_dir), fabric or make_fabric(device, config.precision),
                 pretrained_body, history if history is not None else [])
    if resume:
        _restore(run)
    if isinstance(start_candidate, StartCandidate) and run.start_epoch == 0:
        adopt_start(run, start_candidate)
    elif start_candidate and run.start_epoch == 0 and val is not None and len(val):
        evaluate_start(run, val)
    if run.micro_splits > 1:
        run.event(f"CPU: each batch of {run.per_rank} runs as {run.micro_splits} micro-batches of at most "
                  f"{CPU_MICRO_BATCH} (faster per image here; same gradients, BatchNorm in training mode "
                  "sees the micro-batch).")
    done_epochs = run.start_epoch
    # CPU bf16: strided depthwise convolutions stay fp32 (their bf16 backward is slow; see runtime.py).
    cpu_bf16 = run.fabric.device.type == "cpu" and "bf16" in precision_name(run.fabric)
    with fp32_strided_depthwise(net, enabled=cpu_bf16), epoch_progress(progress and run.fabric.is_global_zero,
                                                                   config.epochs) as bar:
        for epoch in range(run.start_epoch, config.epochs):
            t0 = time.perf_counter()
            row = _train_epoch(run, epoch, bar, _fault)
            improved = _evaluate_epoch(run, row, val, monitor, epoch)
            row["seconds"] = time.perf_counter() - t0
            run.history.append(row)
            done_epochs = epoch + 1
            patience = config.early_stopping_patience
            run.stopped_early = patience is not None and run.stale >= patience
            if run.fabric.is_global_zero:
                _save_epoch(run, epoch, improved)
            run.fabric.barrier()
            if run.stopped_early:
                run.event(f"early stopping after epoch {epoch + 1}: val accuracy has not improved "
                          f"for {run.stale} epochs.")
                break
            if keep_going is not None and epoch + 1 < config.epochs and not keep_going(run.history):
                run.event(f"stopped after epoch {epoch + 1} of {config.epochs} by the caller (not on course).")
                break
    return _finish(run, done_epochs)


def _setup(net: nn.Module, train: ArrayData, config: TrainConfig, run_dir: Path, fabric,
           pretrained_body: bool, history: list[dict[str, Any]]) -> Run:
    """Model on the device, parameter groups, optimizer, per-rank data loader, schedule."""
    ws = fabric.world_size
    torch.manual_seed(config.seed)
    net = fabric.to_device(net.to(memory_format=torch.channels_last))
    groups = network_groups(net)
    optimizer, lr_of = build_optimizer(groups, config, pretrained_body)
    per_rank = max(1, config.batch_size // ws)  # so that the global batch equals config.batch_size
    dataset = UInt8ImageDataset(train, config.augment, config.flip, config.seed, config.crop_scale)
    sampler = EpochSampler(len(dataset), ws, fabric.global_rank, config.seed)
    n_local = len(sampler)
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=config.num_workers,
                        pin_memory=fabric.device.type == "cuda", drop_last=n_local % per_rank == 1 and n_local > 1)
    loader = fabric.setup_dataloaders(loader, use_distributed_sampler=False)
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    scheduler = build_scheduler(optimizer, [n for n, _ in groups], config, steps_per_epoch)
    run = Run(fabric=fabric, config=config, net=net, groups=groups, optimizer=optimizer,
               optimizer_f=fabric.setup_optimizers(optimizer), scheduler=scheduler, lr_of=lr_of,
               dataset=dataset, sampler=sampler, loader=loader, per_rank=per_rank,
               ckpt=Checkpointer(run_dir), run_dir=run_dir, history=history,
               criterion=TrainingLoss(config.label_smoothing,
                                      balanced_weights(train.labels) if config.class_weight == "balanced" else None),
               micro_splits=cpu_micro_splits(per_rank, fabric.device))
    if per_rank * ws != config.batch_size:
        run.event(f"batch_size {config.batch_size} is not divisible by {ws} processes; global batch {per_rank * ws}.")
    return run


def _restore(run: Run) -> None:
    """Continue from the last completed epoch's checkpoint, when there is one."""
    latest = run.ckpt.latest()
    if latest is None:
        run.event(f"resume=True but no checkpoint in {run.ckpt.dir}; starting from epoch 1.")
        return
    meta, model_state, best_saved, state = Checkpointer.load(latest)
    check_resumable(meta, run.config.to_dict(), run.groups, latest)
    run.net.load_state_dict(model_state)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    run.start_epoch, run.step = meta["epoch"], meta["step"]
    run.best_acc, run.best_epoch, run.stale = meta["best_val_acc"], meta["best_epoch"], meta["stale_epochs"]
    run.start_val_acc = meta.get("start_val_acc")
    run.start_margin = float(meta.get("start_margin", 0.0))
    run.best_state = best_saved
    run.history[:] = list(meta["history"])
    run.resumed_from = run.start_epoch
    set_frozen(run.groups, meta["frozen_groups"])  # as saved; re-derived per epoch
    run.event(f"resumed from {latest} after epoch {run.start_epoch} (step {run.step}).")
    if meta.get("stopped_early"):
        run.start_epoch = run.config.epochs  # the run had finished


def _start_epoch(run: Run, epoch: int) -> None:
    """Apply the epoch's frozen groups (re-wrapping the module when they change), seeds, train mode."""
    frozen = run.config.frozen_groups(run.names, epoch)
    if frozen != run.frozen or run.model is None:
        set_frozen(run.groups, frozen)
        if run.model is not None:  # rebuild the DDP wrapper over the new trainable set
            run.model = None
            gc.collect()
        run.model = run.fabric.setup_module(run.net)
        if run.frozen is not None:
            run.event(f"epoch {epoch + 1}: frozen groups now {frozen or 'none'}.")
        run.frozen = frozen
    torch.manual_seed(_epoch_seed(run.config.seed, epoch, run.fabric.global_rank))
    run.sampler.start_epoch(epoch)
    run.dataset.set_epoch(epoch)
    run.model.train()
    apply_bn_policy(run.net, run.config.bn_policy)


def _train_epoch(run: Run, epoch: int, bar, fault: Callable[[int, int], None] | None) -> dict[str, Any]:
    """One pass over this rank's shard; returns the epoch's history row (train columns filled)."""
    _start_epoch(run, epoch)
    fabric, config = run.fabric, run.config
    lr_start = [float(g["lr"]) for g in run.optimizer.param_groups]  # reported: lr at the epoch's start
    batches = len(run.loader)
    loss_sum, correct, seen = 0.0, 0, 0
    run.optimizer_f.zero_grad(set_to_none=True)
    for bi, (x, y) in enumerate(run.loader):
        if fault is not None:
            fault(epoch, bi)
        last_in_window = (bi + 1) % config.grad_accum == 0 or bi + 1 == batches
        bl, bc = _train_batch_backing_off(run, x, y, last_in_window, epoch, bi)
        _check_finite(run, bl, epoch)
        loss_sum += bl * y.shape[0]
        correct += bc
        seen += y.shape[0]
        if last_in_window:
            run.optimizer_f.step()
            run.optimizer_f.zero_grad(set_to_none=True)
            run.scheduler.step()
            run.step += 1
            kill_point("engine.step")
        if bar is not None:
            bar(epoch, bi + 1, batches, f"loss {loss_sum / max(1, seen):.4f}")
    totals = fabric.all_reduce(torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=fabric.device),
                               reduce_op="sum")
    return {
        "epoch": epoch + 1,
        "train_loss": float(totals[0] / totals[2]),
        "train_acc": float(totals[1] / totals[2]),
        "val_loss": None,
        "val_acc": None,
        "monitor_acc": None,
        "lr": lr_start[-1],
        "lr_body": lr_start[-2] if len(run.groups) > 1 else None,
        "frozen": ",".join(run.frozen or []),
    }


def _train_batch_backing_off(run: Run, x, y, sync: bool, epoch: int, bi: int) -> tuple[float, int]:
    """``_train_batch``, retried in twice as many micro-batches after a CUDA out-of-memory."""
    while True:
        try:
            return _train_batch(run.fabric, run.model, run.criterion, x, y, run.micro_splits, run.config.grad_accum,
                                sync)
        except torch.cuda.OutOfMemoryError:
            if x.shape[0] < 2 * run.micro_splits:
                raise
            run.optimizer_f.zero_grad(set_to_none=True)
            run.micro_splits *= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            run.event(
                f"CUDA out of memory at epoch {epoch + 1}, batch {bi + 1}: micro-batch halved to "
                f"{math.ceil(x.shape[0] / run.micro_splits)} (gradient accumulation x{run.micro_splits}, "
                "same effective batch); retrying the batch."
            )


def _train_batch(fabric, model, criterion, x, y, splits: int, grad_accum: int, sync: bool) -> tuple[float, int]:
    """Forward + backward of one loaded batch in ``splits`` micro-batches; returns (mean loss, correct)."""
    n = x.shape[0]
    xs, ys = torch.tensor_split(x, splits), torch.tensor_split(y, splits)
    loss_total, correct = 0.0, 0
    for j, (xc, yc) in enumerate(zip(xs, ys, strict=True)):
        if yc.shape[0] == 0:
            continue
        last = j == len(xs) - 1
        with fabric.no_backward_sync(model, enabled=not (sync and last)):
            logits = model(to_input(xc))
            loss = criterion(logits.float(), yc)
            fabric.backward(loss * (yc.shape[0] / n) / grad_accum)
        loss_total += float(loss.detach()) * yc.shape[0]
        correct += int((logits.detach().argmax(1) == yc).sum())
    return loss_total / n, correct


def _check_finite(run: Run, loss: float, epoch: int) -> None:
    """Raise TrainingDivergedError on every rank when any rank's batch loss is NaN or infinite."""
    finite = torch.tensor([1.0 if math.isfinite(loss) else 0.0], device=run.fabric.device)
    if run.fabric.world_size > 1:
        finite = run.fabric.all_reduce(finite, reduce_op="sum") / run.fabric.world_size
    if float(finite) >= 1.0:
        return
    lrs = ", ".join(f"{g.get('name', i)}={g['lr']:.3g}" for i, g in enumerate(run.optimizer.param_groups))
    last = run.ckpt.latest()
    kept = f"the last good checkpoint ({last}) is kept" if last else "no epoch had completed, so no checkpoint"
    raise TrainingDivergedError(
        f"Training diverged: the loss became {loss} at epoch {epoch + 1}, optimizer step {run.step + 1} "
        f"(learning rates {lrs}); {kept}. Lower the learning rate (e.g. 10x smaller 'lr'), add warm-up "
        "('warmup_epochs') or use precision '32-true', then run again."
    )


def _evaluate_epoch(run: Run, row: dict[str, Any], val: ArrayData | None, monitor: ArrayData | None,
                    epoch: int) -> bool:
    """Fill the row's val / monitor columns and track the best epoch; True when val improved."""
    eval_bs, smoothing = run.per_rank * 2, run.config.label_smoothing
    improved = False
    # The unwrapped network, in fp32: the model the run returns is scored as it will predict. Under
    # bf16 autocast a partial fine-tune of digits scored 0.979 on its 189 selection images, and 0.952
    # in fp32; its epoch was kept over linear (0.975) and scored 0.929 held-out against 0.981.
    if val is not None and len(val):
        m = evaluate(run.fabric, run.net, val, eval_bs, smoothing)
        row["val_loss"], row["val_acc"], row["val_balanced_acc"] = m["loss"], m["accuracy"], m["balanced_accuracy"]
        score = m[run.config.selection_metric]
        # Against a start scored by cross-validation, measurably (engine/start.py: margin_to_beat).
        if run.best_acc is None or score > run.best_acc + margin_to_beat(run):
            run.best_acc, run.best_epoch, run.stale, improved = score, epoch + 1, 0, True
            run.best_state = state_to_cpu(run.net)
        else:
            run.stale += 1
    if monitor is not None and len(monitor):
        row["monitor_acc"] = evaluate(run.fabric, run.net, monitor, eval_bs, smoothing)["accuracy"]
    return improved


def _save_epoch(run: Run, epoch: int, improved: bool) -> None:
    """Rank 0: the epoch's checkpoint (atomic), then ``history.json``."""
    frozen = run.frozen or []
    meta = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch + 1,
        "step": run.step,
        "config": run.config.to_dict(),
        "frozen_groups": frozen,
        "param_groups": [
            {
                "name": n,
                "lr": run.lr_of[n],
                "current_lr": float(g["lr"]),
                "frozen": n in frozen,
                "num_params": sum(p.numel() for p in g["params"]),
            }
            for n, g in zip(run.names, run.optimizer.param_groups, strict=True)
        ],
        "best_val_acc": run.best_acc,
        "best_epoch": run.best_epoch,
        "start_val_acc": run.start_val_acc,
        "start_margin": run.start_margin,
        "stale_epochs": run.stale,
        "stopped_early": run.stopped_early,
        "history": run.history,
        "world_size": run.fabric.world_size,
        "precision": precision_name(run.fabric),
    }
    state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "rng": rng_state()}
    run.ckpt.save(epoch + 1, state_to_cpu(run.net), run.best_state, improved, state, meta)
    atomic_write_json(run.run_dir / "history.json", run.history)
    kill_point("engine.epoch_end")


def _finish(run: Run, done_epochs: int) -> TrainResult:
    """Best-on-val weights (when there was a val set), nothing frozen, eval mode."""
    if run.best_state is not None:
        run.net.load_state_dict(run.best_state)
    set_frozen(run.groups, [])
    run.net.eval()
    return TrainResult(history=run.history, epochs_run=done_epochs, best_epoch=run.best_epoch,
                       best_val_acc=run.best_acc, stopped_early=run.stopped_early, resumed_from=run.resumed_from,
                       checkpoint_dir=run.ckpt.dir, precision=precision_name(run.fabric), events=run.events,
                       start_val_acc=run.start_val_acc, selection_metric=run.config.selection_metric)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63 - 1)
