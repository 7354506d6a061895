"""Training data: decoded uint8 arrays, augmentation on the fly, and the per-rank sampler.

Augmentation (random resized crop at the input size, optional flip) runs on uint8 tensors per
sample with an RNG derived from (seed, epoch, index), so it depends neither on the sampler, nor on
the number of processes, nor on whether the run was resumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from ..errors import ConfigError


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


def to_input(x: torch.Tensor) -> torch.Tensor:
    """A uint8 batch as the network's float input (0..255; ``TransferNet`` normalises), channels_last."""
    return x.float().contiguous(memory_format=torch.channels_last)
