"""The training loop for the fine-tuning strategies (partial, full, scratch) and ``pretrain``.

Why Lightning Fabric: it is small and leaves the loop in our hands (this file reads top to
bottom: set up, for each epoch train / evaluate / checkpoint), yet gives us the accelerator
(CPU, one GPU), the DDP strategy under ``torchrun`` (gloo on CPU, NCCL on GPU) and the
precision plugins (bf16 autocast on CPU, AMP with a grad scaler on CUDA) without a Trainer's
callback machinery. Hugging Face Accelerate would do the same job but pulls in the HF stack.

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
  reproduces the uninterrupted one bit for bit).
- A NaN/inf loss raises :class:`TrainingDivergedError` naming the epoch and step; the last good
  checkpoint is kept. A CUDA out-of-memory on a batch halves the micro-batch (the batch is run
  in two halves whose gradients are summed, so the effective batch is unchanged) and retries.
- CPU speed (``benchmarks/train.py``: 2.9x the tutorial loop per epoch): bf16 autocast with
  channels_last; batches above ``CPU_MICRO_BATCH`` images run as micro-batches (cache-sized);
  stride-2 depthwise convolutions stay fp32 (``device.fp32_strided_depthwise``).
- Only rank 0 writes files; metrics are summed over ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from .device import fp32_strided_depthwise
from .errors import ConfigError, StoreError, TrainingDivergedError
from .io import atomic_write_json, is_no_space, kill_point, read_json

log = logging.getLogger("transferkit.engine")

OPTIMIZERS = ("adamw", "sgd")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
PRECISION_ALIASES = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
BN_POLICIES = ("eval", "frozen", "train")
HEAD = "head"
CHECKPOINT_FORMAT = 1


def _fmt_set(values: tuple[str, ...]) -> str:
    return "{" + ",".join(f"'{v}'" for v in values) + "}"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything that determines a training run (besides the data and the initial weights).

    ``lr`` is the head's learning rate; pretrained body groups get ``lr * body_lr_ratio``.
    ``freeze_stages=k`` freezes the stem and stages 1..k for the whole run (0: nothing frozen);
    ``freeze_until`` names the last frozen group instead ("stem", "stage2", "top", ...).
    ``head_epochs`` (full fine-tuning) trains the head alone for that many epochs first.
    """

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    body_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True
    flip: bool = True
    # Smallest share of the image a random resized crop keeps. 0.5 suits photos; glyphs such as
    # digits lose their identity when half is cropped away, so studies on them raise it.
    crop_scale: float = 0.5
    precision: str = "auto"
    grad_accum: int = 1
    early_stopping_patience: int | None = None
    seed: int = 0
    freeze_stages: int = 0
    freeze_until: str | None = None
    bn_policy: str = "frozen"
    head_epochs: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
                raise ConfigError(f"The '{name}' parameter must be an integer >= {minimum}. Got {v!r} instead.")

        def number(name: str, lo: float, hi: float, lo_open: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, int | float | np.floating) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
            if not ok:
                lo_s = f"> {lo}" if lo_open else f">= {lo}"
                raise ConfigError(f"The '{name}' parameter must be a number {lo_s} and <= {hi}. Got {v!r} instead.")

        def choice(name: str, options: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in options:
                raise ConfigError(f"The '{name}' parameter must be one of {_fmt_set(options)}. Got {v!r} instead.")

        self.precision = PRECISION_ALIASES.get(self.precision, self.precision)
        positive_int("epochs")
        positive_int("batch_size")
        positive_int("grad_accum")
        positive_int("seed", 0)
        positive_int("freeze_stages", 0)
        positive_int("head_epochs", 0)
        positive_int("num_workers", 0)
        choice("optimizer", OPTIMIZERS)
        choice("precision", PRECISIONS)
        choice("bn_policy", BN_POLICIES)
        number("lr", 0.0, 10.0, lo_open=True)
        number("body_lr_ratio", 0.0, 10.0)
        number("weight_decay", 0.0, 1.0)
        number("warmup_epochs", 0.0, float(self.epochs))
        number("label_smoothing", 0.0, 0.99)
        number("crop_scale", 0.05, 1.0)
        for name in ("augment", "flip"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"The '{name}' parameter must be True or False. Got {getattr(self, name)!r} instead.")
        if self.early_stopping_patience is not None:
            positive_int("early_stopping_patience")
        if self.head_epochs >= self.epochs:
            raise ConfigError(
                f"The 'head_epochs' parameter ({self.head_epochs}) must be smaller than 'epochs' "
                f"({self.epochs}): the body is unfrozen after the head-only epochs."
            )
        if self.freeze_until is not None and not isinstance(self.freeze_until, str):
            raise ConfigError(
                f"The 'freeze_until' parameter must be a layer name such as 'stage2'. "
                f"Got {self.freeze_until!r} instead."
            )
        if self.freeze_until is not None and self.freeze_stages:
            raise ConfigError(
                "Give either 'freeze_stages' or 'freeze_until', not both "
                f"(got freeze_stages={self.freeze_stages}, freeze_until={self.freeze_until!r})."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any], **overrides: Any) -> TrainConfig:
        """Build from a strategy's params dict, ignoring keys that are not TrainConfig fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in {**params, **overrides}.items() if k in names}
        return cls(**kw)

    def frozen_count(self, group_names: list[str]) -> int:
        """How many leading body groups are frozen for the whole run."""
        body = [n for n in group_names if n != HEAD]
        if self.freeze_until is not None:
            if self.freeze_until not in body:
                raise ConfigError(
                    f"The 'freeze_until' parameter must be one of {_fmt_set(tuple(body))}. "
                    f"Got {self.freeze_until!r} instead."
                )
            return body.index(self.freeze_until) + 1
        if self.freeze_stages == 0:
            return 0
        stages = [n for n in body if n.startswith("stage")]
        if self.freeze_stages > len(stages):
            raise ConfigError(
                f"The 'freeze_stages' parameter must be between 0 and {len(stages)} for this backbone "
                f"(stages: {', '.join(stages)}). Got {self.freeze_stages} instead."
            )
        return body.index(stages[self.freeze_stages - 1]) + 1

    def frozen_groups(self, group_names: list[str], epoch: int) -> list[str]:
        """The body groups frozen during ``epoch`` (0-based): a pure function of the config."""
        body = [n for n in group_names if n != HEAD]
        if epoch < self.head_epochs:
            return body
        return body[: self.frozen_count(group_names)]


@dataclass
class ArrayData:
    """Decoded images (uint8, (N,3,H,W), in memory or memory-mapped) and int labels."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.dtype != np.uint8:
            raise ConfigError(
                f"Images must be a uint8 array of shape (N, 3, H, W). Got {self.images.dtype} "
                f"{tuple(self.images.shape)} instead."
            )
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.images):
            raise ConfigError(f"{len(self.images)} images but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.labels)


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


# --------------------------------------------------------------------------------------------
# Data: uint8 arrays, augmentation on the fly
# --------------------------------------------------------------------------------------------


def _crop_params(rng: np.random.Generator, h: int, w: int, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params, with an explicit RNG."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        ar = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * ar)))
        ch = int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    return 0, 0, h, w


class UInt8ImageDataset(Dataset):
    """Serves (uint8 (3,H,W) tensor, label); augmentation seeded by (seed, epoch, index)."""

    def __init__(self, data: ArrayData, augment: bool, flip: bool, seed: int, crop_scale: float = 0.5):
        self.data, self.augment, self.flip, self.seed = data, augment, flip, seed
        self.crop_scale = crop_scale
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        from torchvision.transforms.v2 import functional as TF

        img = torch.from_numpy(np.ascontiguousarray(self.data.images[i]))
        if self.augment:
            rng = np.random.default_rng((self.seed, self.epoch, int(i)))
            h, w = img.shape[-2:]
            top, left, ch, cw = _crop_params(rng, h, w, scale=(self.crop_scale, 1.0))
            if (ch, cw) != (h, w):
                img = TF.resized_crop(img, top, left, ch, cw, [h, w], antialias=True)
            if self.flip and rng.random() < 0.5:
                img = TF.horizontal_flip(img)
        return img, int(self.data.labels[i])


class EpochSampler(Sampler):
    """A DistributedSampler (seeded shuffle, this rank's shard) whose epoch we set ourselves.

    Fabric's dataloader wrapper calls ``set_epoch(number of iterations since it was created)`` on
    any sampler that has ``set_epoch``: after a resume that count restarts at 0, so the resumed
    epochs would see the data order of the first epochs. This wrapper has no ``set_epoch``; the
    loop calls :meth:`start_epoch` with the real epoch number instead.
    """

    def __init__(self, n: int, num_replicas: int, rank: int, seed: int):
        self._inner = DistributedSampler(
            range(n), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False
        )

    def start_epoch(self, epoch: int) -> None:
        self._inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(self._inner)

    def __len__(self) -> int:
        return len(self._inner)


# --------------------------------------------------------------------------------------------
# Devices, precision, Fabric
# --------------------------------------------------------------------------------------------


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_precision(precision: str, accelerator: str) -> str:
    precision = PRECISION_ALIASES.get(precision, precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"The 'precision' parameter must be one of {_fmt_set(PRECISIONS)}. Got {precision!r}.")
    if accelerator == "cuda":
        if precision == "auto":
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return precision
    if precision == "16-mixed":
        raise ConfigError("precision '16-mixed' needs a CUDA GPU; on CPU use 'bf16-mixed' or '32-true'.")
    if precision == "auto":
        try:
            bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            bf16 = False
        return "bf16-mixed" if bf16 else "32-true"
    return precision


def resolve_accelerator(device: str) -> tuple[str, Any]:
    """(accelerator, devices) for Fabric from "auto" | "cpu" | "cuda" | "cuda:N"."""
    n_local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu", n_local
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for but no CUDA GPU is visible; use 'cpu'.")
        if ":" in device and world_size() == 1:
            return "cuda", [int(device.split(":", 1)[1])]
        return "cuda", n_local
    raise ConfigError(f"The 'device' parameter must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got {device!r}.")


def precision_name(fabric) -> str:
    return str(getattr(fabric.strategy.precision, "precision", type(fabric.strategy.precision).__name__))


def make_fabric(device: str = "auto", precision: str = "auto"):
    """A launched Fabric: DDP when started by torchrun (WORLD_SIZE > 1), one device otherwise."""
    from lightning_fabric import Fabric

    accelerator, devices = resolve_accelerator(device)
    ws = world_size()
    num_nodes = max(1, ws // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    fabric = Fabric(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy="ddp" if ws > 1 else "auto",
        precision=resolve_precision(precision, accelerator),
    )
    fabric.launch()
    return fabric


# --------------------------------------------------------------------------------------------
# Parameter groups, freezing, BatchNorm policy, schedule
# --------------------------------------------------------------------------------------------


def network_groups(net: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
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


def set_frozen(groups: list[tuple[str, list[nn.Parameter]]], frozen: list[str]) -> None:
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


def build_optimizer(groups, config: TrainConfig, pretrained_body: bool = True):
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


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _state_to_cpu(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """``run_dir/checkpoints/epoch_NNNN/`` {model, best}.safetensors + state.pt + meta.json.

    Each epoch directory is built under a temporary name and renamed into place, then
    ``latest.json`` is replaced atomically; older epoch directories are removed afterwards.
    ``state.pt`` (optimizer, scheduler, RNG) holds only tensors and plain containers and is read
    with ``torch.load(weights_only=True)``.
    """

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "checkpoints"

    def latest(self) -> Path | None:
        pointer = self.dir / "latest.json"
        if pointer.exists():
            path = self.dir / read_json(pointer)["dir"]
            if (path / "meta.json").exists():
                return path
        done = sorted(p for p in self.dir.glob("epoch_*") if (p / "meta.json").exists())
        return done[-1] if done else None

    def save(self, epoch: int, model_state, best_state, best_changed: bool, state: dict, meta: dict) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch_{epoch:04d}"
        final = self.dir / name
        tmp = self.dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        prev = self.latest()
        try:
            tmp.mkdir()
            _save_tensors(tmp / "model.safetensors", model_state)
            if best_state is not None:
                if not best_changed and prev is not None and (prev / "best.safetensors").exists():
                    shutil.copyfile(prev / "best.safetensors", tmp / "best.safetensors")
                else:
                    _save_tensors(tmp / "best.safetensors", best_state)
            # Through memory: torch.save into a file on a full disk hides ENOSPC behind
            # "unexpected pos"; a plain write reports it.
            buf = io.BytesIO()
            torch.save(state, buf)
            (tmp / "state.pt").write_bytes(buf.getbuffer())
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=_jsonable))
            for f in tmp.iterdir():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, Exception) and is_no_space(exc):
                raise StoreError(
                    f"No space left on device while writing the checkpoint of epoch {epoch} in {self.dir}; "
                    f"the previous checkpoint ({prev.name if prev else 'none yet'}) is intact. Free some disk "
                    "space and run the same command again with resume."
                ) from exc
            raise
        kill_point("engine.checkpoint.tmp_written")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        kill_point("engine.checkpoint.renamed")
        atomic_write_json(self.dir / "latest.json", {"dir": name, "epoch": epoch})
        for old in self.dir.glob("epoch_*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load(path: Path) -> tuple[dict, dict, dict | None, dict]:
        from safetensors.torch import load_file

        try:
            meta = read_json(path / "meta.json")
            model_state = load_file(str(path / "model.safetensors"))
            best = load_file(str(path / "best.safetensors")) if (path / "best.safetensors").exists() else None
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise StoreError(
                f"Checkpoint {path} cannot be read ({exc}). Delete {path.parent} to start the run afresh."
            ) from exc
        return meta, model_state, best, state


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


# --------------------------------------------------------------------------------------------
# Evaluation and prediction
# --------------------------------------------------------------------------------------------


def _batches(images: np.ndarray, idx: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for s in range(0, len(idx), batch_size):
        yield idx[s : s + batch_size]


def _to_input(x: torch.Tensor) -> torch.Tensor:
    return x.float().contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def _evaluate(fabric, model, data: ArrayData, batch_size: int, label_smoothing: float) -> tuple[float, float]:
    """(mean loss, accuracy) over ``data``, sharded over ranks without padding and summed."""
    model.eval()
    idx = np.arange(fabric.global_rank, len(data), fabric.world_size)
    loss_sum = torch.zeros((), dtype=torch.float64, device=fabric.device)
    correct = torch.zeros((), dtype=torch.float64, device=fabric.device)
    for b in _batches(data.images, idx, batch_size):
        x = fabric.to_device(torch.from_numpy(np.ascontiguousarray(data.images[b])))
        y = fabric.to_device(torch.from_numpy(data.labels[b]))
        logits = model(_to_input(x)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum", label_smoothing=label_smoothing).double()
        correct += (logits.argmax(1) == y).sum().double()
    totals = fabric.all_reduce(torch.stack([loss_sum, correct]), reduce_op="sum")
    n = max(1, len(data))
    return float(totals[0]) / n, float(totals[1]) / n


@torch.no_grad()
def predict_logits(net: nn.Module, images: np.ndarray, batch_size: int = 64, device: str = "auto") -> np.ndarray:
    """Logits (N, C) float32 for uint8 images (N,3,H,W); fp32, eval mode, batched."""
    dev = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    )
    net = net.to(dev).eval()
    out = []
    for s in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(dev)
        out.append(net(_to_input(x)).float().cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63 - 1)


@contextlib.contextmanager
def _progress(enabled: bool, total_epochs: int) -> Iterator[Callable[..., None] | None]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=False,
    ) as prog:
        task = prog.add_task("train", total=None, info="")

        def update(epoch: int, done: int, total: int, info: str = "") -> None:
            prog.update(task, description=f"epoch {epoch + 1}/{total_epochs}", completed=done, total=total, info=info)

        yield update


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
    _fault: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``net`` (a TransferNet: ``backbone_groups()``, ``head``, input uint8/float 0..255).

    ``pretrained_body=False`` (scratch, pretrain) gives every group the head's lr. The network is
    trained in place; at the end it holds the best-on-val weights (or the last ones without val).
    ``history`` (e.g. ``ctx.history``) receives one dict per epoch; ``run_dir/history.json`` too.
    ``_fault(epoch, batch)`` is a test hook called before every batch.
    """
    run_dir = Path(run_dir)
    history = history if history is not None else []
    fabric = fabric or make_fabric(device, config.precision)
    rank0 = fabric.is_global_zero
    ws = fabric.world_size
    events: list[str] = []

    def event(msg: str) -> None:
        events.append(msg)
        log.warning(msg) if "out of memory" in msg else log.info(msg)

    torch.manual_seed(config.seed)
    net = net.to(memory_format=torch.channels_last)
    net = fabric.to_device(net)
    groups = network_groups(net)
    names = [n for n, _ in groups]
    optimizer, lr_of = build_optimizer(groups, config, pretrained_body)

    # Data: per-rank batch so that the global batch equals config.batch_size.
    per_rank = max(1, config.batch_size // ws)
    if per_rank * ws != config.batch_size:
        event(f"batch_size {config.batch_size} is not divisible by {ws} processes; global batch {per_rank * ws}.")
    dataset = UInt8ImageDataset(train, config.augment, config.flip, config.seed, config.crop_scale)
    sampler = EpochSampler(len(dataset), ws, fabric.global_rank, config.seed)
    n_local = len(sampler)
    loader = DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=fabric.device.type == "cuda",
        drop_last=n_local % per_rank == 1 and n_local > 1,
    )
    loader = fabric.setup_dataloaders(loader, use_distributed_sampler=False)
    batches_per_epoch = len(loader)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
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
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    optimizer_f = fabric.setup_optimizers(optimizer)

    ckpt = Checkpointer(run_dir)
    start_epoch, step = 0, 0
    best_acc: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0
    resumed_from = None
    cfg_dict = config.to_dict()

    latest = ckpt.latest() if resume else None
    if resume and latest is None:
        event(f"resume=True but no checkpoint in {ckpt.dir}; starting from epoch 1.")
    if latest is not None:
        meta, model_state, best_saved, state = Checkpointer.load(latest)
        _check_resumable(meta, cfg_dict, groups, latest)
        net.load_state_dict(model_state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start_epoch, step = meta["epoch"], meta["step"]
        best_acc, best_epoch, stale = meta["best_val_acc"], meta["best_epoch"], meta["stale_epochs"]
        best_state = best_saved
        history[:] = list(meta["history"])
        resumed_from = start_epoch
        set_frozen(groups, meta["frozen_groups"])  # as saved; re-derived per epoch below
        event(f"resumed from {latest} after epoch {start_epoch} (step {step}).")
        if meta.get("stopped_early"):
            start_epoch = config.epochs  # the run had finished

    current_frozen: list[str] | None = None
    model = None
    stopped_early = False
    done_epochs = start_epoch
    micro_splits = cpu_micro_splits(per_rank, fabric.device)
    if micro_splits > 1:
        event(f"CPU: each batch of {per_rank} runs as {micro_splits} micro-batches of at most {CPU_MICRO_BATCH} "
              "(faster per image here; same gradients, BatchNorm in training mode sees the micro-batch).")
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    # CPU bf16: strided depthwise convolutions stay fp32 (their bf16 backward is slow; see device.py).
    cpu_bf16 = fabric.device.type == "cpu" and "bf16" in precision_name(fabric)
    with fp32_strided_depthwise(net, enabled=cpu_bf16), _progress(progress and rank0, config.epochs) as bar:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            frozen = config.frozen_groups(names, epoch)
            if frozen != current_frozen or model is None:
                set_frozen(groups, frozen)
                if model is not None:  # rebuild the DDP wrapper over the new trainable set
                    del model
                    gc.collect()
                model = fabric.setup_module(net)
                if current_frozen is not None:
                    event(f"epoch {epoch + 1}: frozen groups now {frozen or 'none'}.")
                current_frozen = frozen
            torch.manual_seed(_epoch_seed(config.seed, epoch, fabric.global_rank))
            sampler.start_epoch(epoch)
            dataset.set_epoch(epoch)
            model.train()
            apply_bn_policy(net, config.bn_policy)

            lr_start = [float(g["lr"]) for g in optimizer.param_groups]  # reported: lr at the epoch's start
            loss_sum = 0.0
            correct = 0
            seen = 0
            optimizer_f.zero_grad(set_to_none=True)
            for bi, (x, y) in enumerate(loader):
                if _fault is not None:
                    _fault(epoch, bi)
                last_in_window = (bi + 1) % config.grad_accum == 0 or bi + 1 == batches_per_epoch
                while True:
                    try:
                        bl, bc = _train_batch(
                            fabric, model, criterion, x, y, micro_splits, config.grad_accum, last_in_window
                        )
                        break
                    except torch.cuda.OutOfMemoryError:
                        if x.shape[0] < 2 * micro_splits:
                            raise
                        optimizer_f.zero_grad(set_to_none=True)
                        micro_splits *= 2
                        if torch.cuda.is_available():
                            torch.cuda.empty_cache()
                        event(
                            f"CUDA out of memory at epoch {epoch + 1}, batch {bi + 1}: micro-batch halved to "
                            f"{math.ceil(x.shape[0] / micro_splits)} (gradient accumulation x{micro_splits}, "
                            "same effective batch); retrying the batch."
                        )
                finite = torch.tensor([1.0 if math.isfinite(bl) else 0.0], device=fabric.device)
                if ws > 1:
                    finite = fabric.all_reduce(finite, reduce_op="sum") / ws
                if float(finite) < 1.0:
                    raise _diverged(epoch, step, bl, optimizer, ckpt)
                loss_sum += bl * y.shape[0]
                correct += bc
                seen += y.shape[0]
                if last_in_window:
                    optimizer_f.step()
                    optimizer_f.zero_grad(set_to_none=True)
                    scheduler.step()
                    step += 1
                    kill_point("engine.step")
                if bar is not None:
                    bar(epoch, bi + 1, batches_per_epoch, f"loss {loss_sum / max(1, seen):.4f}")

            totals = fabric.all_reduce(
                torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=fabric.device),
                reduce_op="sum",
            )
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": float(totals[0] / totals[2]),
                "train_acc": float(totals[1] / totals[2]),
                "val_loss": None,
                "val_acc": None,
                "monitor_acc": None,
                "lr": lr_start[-1],
                "lr_body": lr_start[-2] if len(names) > 1 else None,
                "frozen": ",".join(frozen),
            }
            eval_bs = per_rank * 2
            improved = False
            if val is not None and len(val):
                row["val_loss"], row["val_acc"] = _evaluate(fabric, model, val, eval_bs, config.label_smoothing)
                if best_acc is None or row["val_acc"] > best_acc:
                    best_acc, best_epoch, stale, improved = row["val_acc"], epoch + 1, 0, True
                    best_state = _state_to_cpu(net)
                else:
                    stale += 1
            if monitor is not None and len(monitor):
                _, row["monitor_acc"] = _evaluate(fabric, model, monitor, eval_bs, config.label_smoothing)
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            done_epochs = epoch + 1
            stopped_early = config.early_stopping_patience is not None and stale >= config.early_stopping_patience
            if rank0:
                meta = {
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch + 1,
                    "step": step,
                    "config": cfg_dict,
                    "frozen_groups": frozen,
                    "param_groups": [
                        {
                            "name": n,
                            "lr": lr_of[n],
                            "current_lr": float(g["lr"]),
                            "frozen": n in frozen,
                            "num_params": sum(p.numel() for p in g["params"]),
                        }
                        for n, g in zip(names, optimizer.param_groups, strict=True)
                    ],
                    "best_val_acc": best_acc,
                    "best_epoch": best_epoch,
                    "stale_epochs": stale,
                    "stopped_early": stopped_early,
                    "history": history,
                    "world_size": ws,
                    "precision": precision_name(fabric),
                }
                state = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": _rng_state(),
                }
                ckpt.save(epoch + 1, _state_to_cpu(net), best_state, improved, state, meta)
                atomic_write_json(run_dir / "history.json", history)
                kill_point("engine.epoch_end")
            fabric.barrier()
            if stopped_early:
                event(f"early stopping after epoch {epoch + 1}: val accuracy has not improved for {stale} epochs.")
                break

    if best_state is not None:
        net.load_state_dict(best_state)
    set_frozen(groups, [])
    net.eval()
    return TrainResult(
        history=history,
        epochs_run=done_epochs,
        best_epoch=best_epoch,
        best_val_acc=best_acc,
        stopped_early=stopped_early,
        resumed_from=resumed_from,
        checkpoint_dir=ckpt.dir,
        precision=precision_name(fabric),
        events=events,
    )


# Largest micro-batch on the CPU: a MobileNet v1 training step ran at 106 img/s with 16 images and
# 82 img/s with 32 on the 2-core reference machine (bf16, channels_last): the activations of 32
# images at 112x112 no longer stay in cache. Larger batches are split and their gradients summed.
CPU_MICRO_BATCH = 16


def cpu_micro_splits(batch: int, device: torch.device) -> int:
    """Micro-batches per loaded batch: 1 on accelerators, enough for <= CPU_MICRO_BATCH on the CPU."""
    return max(1, math.ceil(batch / CPU_MICRO_BATCH)) if device.type == "cpu" else 1


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
            logits = model(_to_input(xc))
            loss = criterion(logits.float(), yc)
            fabric.backward(loss * (yc.shape[0] / n) / grad_accum)
        loss_total += float(loss.detach()) * yc.shape[0]
        correct += int((logits.detach().argmax(1) == yc).sum())
    return loss_total / n, correct


def _diverged(epoch: int, step: int, loss: float, optimizer, ckpt: Checkpointer) -> TrainingDivergedError:
    lrs = ", ".join(f"{g.get('name', i)}={g['lr']:.3g}" for i, g in enumerate(optimizer.param_groups))
    last = ckpt.latest()
    kept = f"the last good checkpoint ({last}) is kept" if last else "no epoch had completed, so no checkpoint"
    return TrainingDivergedError(
        f"Training diverged: the loss became {loss} at epoch {epoch + 1}, optimizer step {step + 1} "
        f"(learning rates {lrs}); {kept}. Lower the learning rate (e.g. 10x smaller 'lr'), add warm-up "
        "('warmup_epochs') or use precision '32-true', then run again."
    )


def _check_resumable(meta: dict, cfg: dict, groups, path: Path) -> None:
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise StoreError(f"Checkpoint {path} has format {meta.get('format')}, expected {CHECKPOINT_FORMAT}.")
    diff = {k: (meta["config"].get(k), v) for k, v in cfg.items() if meta["config"].get(k) != v}
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ConfigError(
            f"Cannot resume from {path}: the training configuration changed ({shown}). "
            "Use the same settings, or start a new run directory."
        )
    saved = [(g["name"], g["num_params"]) for g in meta["param_groups"]]
    now = [(n, sum(p.numel() for p in ps)) for n, ps in groups]
    if saved != now:
        raise StoreError(
            f"Cannot resume from {path}: its parameter groups {saved} do not match the model's {now}. "
            "Was the backbone or the head changed? Start a new run directory."
        )
