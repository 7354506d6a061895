"""The training loop for the fine-tuning strategies (partial, full, scratch) and ``pretrain``.

Why Lightning Fabric: it is small and leaves the loop in our hands (``loop.fit_network`` reads
top to bottom: set up, restore, for each epoch train / evaluate / save), yet gives us the
accelerator (CPU, one GPU), the DDP strategy under ``torchrun`` (gloo on CPU, NCCL on GPU) and the
precision plugins (bf16 autocast on CPU, AMP with a grad scaler on CUDA) without a Trainer's
callback machinery. Hugging Face Accelerate would do the same job but pulls in the HF stack.

Modules: ``config`` (TrainConfig), ``data`` (uint8 arrays, augmentation, sampler), ``freezing``
(parameter groups, freezing, BatchNorm policy, optimizer, schedule), ``checkpoint`` (atomic
per-epoch checkpoints, RNG state, resume checks), ``fabric`` (the Fabric of a run), ``loop``
(fit_network), ``run`` (a run's state), ``start`` (epoch 0 as a candidate: StartCandidate),
``progress`` (its console bar), ``evaluate`` (evaluation, predict_logits).
Device and precision are resolved by ``transferkit.runtime``.

What the loop guarantees:

- Data: uint8 arrays decoded and resized once (``ImageDataset.decode``), held in memory or
  memory-mapped; augmentation (random resized crop at the input size, optional flip) runs on
  uint8 tensors per sample with an RNG derived from (seed, epoch, index), so it does not depend
  on the sampler, the number of processes or whether the run was resumed.
- Freezing is a pure function of the epoch (``TrainConfig.frozen_groups``): the stem and the
  first ``freeze_stages`` stages are frozen for the whole run, and for the first ``head_epochs``
  every body group is frozen. Resuming therefore cannot re-freeze or forget to unfreeze a layer
  (Lightning's ``BaseFinetuning`` resume bug); the checkpoint also records the frozen groups and
  the parameter groups and a resume checks them against the model.
- BatchNorm in frozen groups stays in eval mode (``bn_policy="frozen"``) although ``train()``
  is called every epoch: :func:`apply_bn_policy` re-applies ``eval()`` to them.
- A checkpoint is written after every epoch: a directory ``checkpoints/epoch_NNNN`` built under a
  temporary name and renamed into place, then ``checkpoints/latest.json`` is replaced atomically.
  ``resume=True`` restarts from the last completed epoch; an epoch interrupted part-way is redone
  from its start (its data order and augmentation are the same, so on CPU the resumed run
  reproduces the uninterrupted one bit for bit). Kill points (``transferkit.io.kill_point``):
  ``engine.step`` after each optimizer step, ``engine.checkpoint.tmp_written`` /
  ``engine.checkpoint.renamed`` inside a checkpoint write, ``engine.epoch_end`` after it.
- A NaN/inf loss raises :class:`TrainingDivergedError` naming the epoch and step; the last good
  checkpoint is kept. A CUDA out-of-memory on a batch halves the micro-batch (the batch is run
  in two halves whose gradients are summed, so the effective batch is unchanged) and retries.
- CPU speed (``benchmarks/train.py``: 2.9x the tutorial loop per epoch): bf16 autocast with
  channels_last; batches above ``CPU_MICRO_BATCH`` images run as micro-batches (cache-sized);
  stride-2 depthwise convolutions stay fp32 (``runtime.fp32_strided_depthwise``).
- Only rank 0 writes files; metrics are summed over ranks.
"""

from __future__ import annotations

from .checkpoint import CHECKPOINT_FORMAT, Checkpointer, check_resumable
from .config import BN_POLICIES, HEAD, OPTIMIZERS, TrainConfig
from .data import ArrayData, EpochSampler, UInt8ImageDataset
from .evaluate import predict_logits
from .fabric import make_fabric, precision_name, world_size
from .freezing import (
    WarmupCosine,
    apply_bn_policy,
    build_optimizer,
    network_groups,
    reestimate_bn_statistics,
    set_frozen,
)
from .loop import CPU_MICRO_BATCH, TrainResult, cpu_micro_splits, fit_network
from .start import StartCandidate

__all__ = [
    "BN_POLICIES",
    "CHECKPOINT_FORMAT",
    "CPU_MICRO_BATCH",
    "HEAD",
    "OPTIMIZERS",
    "ArrayData",
    "Checkpointer",
    "EpochSampler",
    "StartCandidate",
    "TrainConfig",
    "TrainResult",
    "UInt8ImageDataset",
    "WarmupCosine",
    "apply_bn_policy",
    "build_optimizer",
    "check_resumable",
    "cpu_micro_splits",
    "fit_network",
    "make_fabric",
    "network_groups",
    "precision_name",
    "predict_logits",
    "reestimate_bn_statistics",
    "set_frozen",
    "world_size",
]
