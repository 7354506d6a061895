"""Feature extraction across processes and machines: ``torchrun ... transferkit extract``.

Under ``torchrun`` every rank runs the same extraction; the store's fixed chunk layout (see
``extract.py``) is what makes it shardable without changing a single number:

- rank 0 creates (or, after an interruption, validates) the partial-chunk folders and lists the
  chunks still missing; that list is broadcast, so every rank works from one view of the disk;
- rank r computes missing chunks r, r + W, r + 2W, ... (round-robin, whole chunks): every chunk
  is computed from the same images in the same batches as in a single-process run, so the
  features are the same bit for bit on the same kind of device;
- all ranks write their chunks into the same partial folder (one shared file system, which is
  what multi-node runs need), meet at a barrier, the layers are consolidated (layer i by rank
  i mod W), a second barrier, then every rank reads the one consolidated store;
- an interrupted run resumes: chunks already on disk are not computed again.

Decoding: a rank decodes only its own chunks. The decode cache (one memory-mapped file of the
whole dataset, written by one process) is read when it already exists and is complete; it is not
written by a sharded run, because every rank writing the whole file would multiply the decoding
work and the temporary disk by W (see ``decode_dir_for``).

Collectives carry JSON (no pickling) and run on gloo for the CPU and NCCL for CUDA, where each rank
uses the GPU ``cuda:LOCAL_RANK``. ``process_group`` initialises the group from torchrun's
environment variables; outside torchrun (no ``WORLD_SIZE`` > 1) it initialises nothing and
extraction is exactly the single-process code path. ``extract_features`` shards whenever a process
group of more than one process is initialised: it is then a collective call, every rank must make it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ..errors import ConfigError, StoreError
from ..runtime import resolve_device

T = TypeVar("T")

# Ranks wait at a barrier for the slowest rank (at most about one chunk behind) and for the
# consolidation of the final files (minutes for millions of images): well above both.
BARRIER_TIMEOUT = timedelta(hours=2)
# How long a rank waits for files another machine wrote to become visible on a network file system
# (NFS caches "file not found" answers for up to a minute by default).
VISIBLE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Shard:
    """This process's place in an initialised process group of ``world`` > 1 processes."""

    rank: int
    world: int
    backend: str

    @property
    def is_first(self) -> bool:
        return self.rank == 0

    def mine(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: round-robin, so shares differ by at most one item."""
        return list(items[self.rank::self.world])

    def _tensor_device(self) -> torch.device:
        # NCCL only moves CUDA tensors; gloo moves CPU tensors.
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()

    def broadcast_json(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (JSON over a uint8 tensor: nothing is unpickled)."""
        import torch.distributed as dist

        dev = self._tensor_device()
        data = json.dumps(obj, sort_keys=True).encode() if self.is_first else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=dev)
        dist.broadcast(size, src=0)
        buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=dev)
        if self.is_first:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buf, src=0)
        return json.loads(bytes(buf.cpu().numpy()).decode())  # rank 0 too: the same types everywhere

    def agree(self, layout: dict[str, Any], pending: list[tuple[int, int, list[str]]]
              ) -> list[tuple[int, int, list[str]]]:
        """Rank 0's list of missing chunks, on every rank; refuses a rank whose chunk layout differs
        (it would compute other batches, so other numbers, into the same store)."""
        ref = self.broadcast_json({"layout": layout, "pending": pending})
        if ref["layout"] != json.loads(json.dumps(layout)):
            raise ConfigError(
                f"Rank {self.rank} extracts with the chunk layout {layout} and rank 0 with {ref['layout']}: "
                "every process must use the same batch size, chunk size, kind of device and extraction runtime "
                "(install the same inference runtimes on every machine, or pass the same --runtime)."
            )
        return [(int(s), int(e), list(names)) for s, e, names in ref["pending"]]


def current_shard() -> Shard | None:
    """The shard of this process when a process group of more than one process is initialised."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    if world <= 1:
        return None
    return Shard(rank=dist.get_rank(), world=world, backend=str(dist.get_backend()))


def torchrun_world() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's environment; (0, 0, 1) outside torchrun."""
    try:
        return (int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError as exc:
        raise ConfigError(f"RANK, LOCAL_RANK and WORLD_SIZE must be integers (torchrun sets them): {exc}") from exc


def rank_device(device: str | torch.device, local_rank: int) -> torch.device:
    """The device of one rank: the CPU, or the GPU ``cuda:LOCAL_RANK`` (one GPU per process)."""
    dev = resolve_device(device)
    if dev.type != "cuda":
        return dev
    if dev.index is not None:
        raise ConfigError(
            f"Under torchrun each process uses the GPU cuda:LOCAL_RANK; --device {device} names one GPU "
            "for every process. Pass --device cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES."
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK {local_rank} but this machine has {count} GPU(s): run torchrun with "
            f"--nproc_per_node {count} (or fewer), one process per GPU."
        )
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def process_group(device: str | torch.device = "auto") -> Iterator[tuple[torch.device, Shard | None]]:
    """This process's device and shard; under torchrun (WORLD_SIZE > 1) the process group is
    initialised from the environment (gloo on the CPU, NCCL on CUDA) and destroyed afterwards.
    Outside torchrun: ``(resolve_device(device), None)`` and nothing is initialised."""
    import torch.distributed as dist

    _, local_rank, world = torchrun_world()
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        yield (resolve_device(device) if world <= 1 else rank_device(device, local_rank)), current_shard()
        return
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed.")
    dev = rank_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", timeout=BARRIER_TIMEOUT)
    try:
        yield dev, current_shard()
    finally:
        dist.destroy_process_group()


def decode_dir_for(shard: Shard | None, dataset: Any, decode_dir: Path | None, preprocessing: Any
                   ) -> Path | None:
    """Where a rank reads decoded images from: the decode cache only when it is already complete.

    A sharded run decodes each rank's own chunks instead (memory: one chunk; no extra disk), so the
    ranks neither decode the whole dataset W times nor write W temporary copies of the cache.
    """
    if shard is None or decode_dir is None:
        return decode_dir
    cache_path = getattr(dataset, "cache_path", None)
    if cache_path is None:
        return None
    hw = (int(preprocessing.input_size[1]), int(preprocessing.input_size[2]))
    path = cache_path(decode_dir, hw, str(preprocessing.interpolation).lower())
    try:
        cached = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return decode_dir if cached.shape == (len(dataset), 3, *hw) and cached.dtype == np.uint8 else None


def wait_visible(paths: Sequence[Path], timeout_s: float = VISIBLE_TIMEOUT_S) -> None:
    """Wait until files written by other machines are visible here (network file systems cache
    "not found" for a while); a StoreError after ``timeout_s`` names the first one still missing."""
    deadline = time.monotonic() + timeout_s
    missing = [p for p in paths if not p.is_file()]
    while missing:
        if time.monotonic() > deadline:
            raise StoreError(
                f"{len(missing)} file(s) written by other ranks are not visible on this machine after "
                f"{timeout_s:.0f} s, e.g. {missing[0]}. A multi-node extraction needs the cache directory "
                "(--cache-dir) on a file system shared by every node."
            )
        time.sleep(0.5)
        missing = [p for p in missing if not p.is_file()]


def consolidate_shared(shard: Shard, stores: Sequence[Any], chunks: Sequence[tuple[int, int]]) -> None:
    """Once every rank's chunks are on disk, layer i is consolidated by rank i mod W; returns when
    every final file is written and visible to this rank."""
    shard.barrier()
    for i, st in enumerate(stores):
        if i % shard.world == shard.rank:
            wait_visible([st.chunk_path(s, e) for s, e in chunks])
            st.consolidate(chunks)
    shard.barrier()
    wait_visible([st.final for st in stores])
