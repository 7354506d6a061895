"""Feature extraction: one forward pass, several layers, streamed to the store in chunks.

Missing layers are computed together, chunk by chunk; while the network runs on one chunk the next
one is read from the decode cache (or decoded) in a worker thread (the inference runtimes, like
PyTorch, release the GIL while they run). Every chunk is computed from the same images in the same
batches (fixed chunk and batch layout, recorded in ``layout.json``; eval mode; same precision and
runtime, and for a runtime the same graph: every layer of the run is one of its outputs), so a
resumed run's features are bit-identical to an uninterrupted run's on the same device.

Decoded images: by default (``decode_cache=True``) the uint8 arrays are cached in
``CacheLayout.from_store_dir(store_dir).decoded`` -- ``<cache>/decoded``, the folder the network
strategies decode into too, so one run decodes a dataset once. That first decode runs before the
network, on every core (the data module's threads); the chunks are then read from the mapped file
while the network runs. With ``decode_cache=False`` each next chunk is decoded during the current
chunk's forward pass.

Precision: ``precision="auto"`` is fp32 on the CPU and bf16 (else fp16) autocast on CUDA, always with
channels_last; ``precision="bf16"`` on a CPU with native bf16 is ~2.4x faster but moved the flowers5
linear probe by -0.36 points on average over 5 paired splits (hymenoptera -0.65), more than the 0.3
allowed, so "auto" does not use it on the CPU. Figures and the rule: ``transferkit.runtime``.

Runtime: ``runtime="auto"`` runs the network, on the CPU at fp32, with an inference runtime
(OpenVINO, else ONNX Runtime) on the backbone's ONNX graph, every requested layer an output of one
pass, exact within 1e-4 relative of PyTorch eager fp32; PyTorch otherwise (``runtime.resolve_extract_runtime``,
``features.runtimes``). The runtime is part of every store key.
"""

from __future__ import annotations

import contextlib
import inspect
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError, StoreError
from ..io import kill_point, sha256_json
from ..runtime import CacheLayout, resolve_device, resolve_extract_runtime, resolve_precision
from .distributed import consolidate_shared, current_shard, decode_dir_for
from .featureset import FeatureSet
from .runtimes import Engine, open_engine
from .store import LayerStore, layer_key_meta

DEFAULT_CHUNK_IMAGES = 256

# Test hook: called as ``_after_chunk(start, stop)`` after each chunk is safely on disk.
_after_chunk: Callable[[int, int], None] | None = None


def _check_pool(pool: Any) -> str | int:
    if pool == "avg":
        return "avg"
    if isinstance(pool, int | np.integer) and not isinstance(pool, bool) and int(pool) >= 1:
        return int(pool)
    raise ConfigError(
        f"The 'pool' parameter must be 'avg' or a positive integer grid size g. Got {pool!r} instead."
    )


def _check_layers(backbone: Any, layers: Sequence[str] | str) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    names = list(dict.fromkeys(layers))
    if not names:
        raise ConfigError("extract_features needs at least one layer name (e.g. ['pool']).")
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"Layer names must be strings; got {name!r}.")
        if hasattr(backbone, "layer"):
            backbone.layer(name)  # raises ConfigError listing the valid names
    return names


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 1:
        raise ConfigError(f"The {name!r} parameter must be a positive integer. Got {value!r} instead.")
    return int(value)


def extract_features(
    backbone: Any,
    dataset: Any,
    layers: Sequence[str] | str,
    *,
    store_dir: str | Path,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    pool: str | int = "avg",
    progress: bool = True,
    decode_cache: bool | str | Path = True,
    chunk_size: int | None = None,
    runtime: str = "auto",
) -> FeatureSet:
    """Pooled features of every image of ``dataset`` at ``layers``, from the store or one forward pass.

    Layers already in ``store_dir`` (same key) are read without decoding images or running the
    network; the missing ones are computed together in one pass, ``batch_size`` images at a time
    (default: 16 on the CPU, 64 on CUDA; see ``default_batch_size``),
    and streamed to disk in chunks of ``chunk_size`` images (default: 256 rounded to a multiple of
    ``batch_size``), so memory is bounded by a chunk, not by the dataset. ``decode_cache``: True
    keeps the data module's uint8 decode cache in the cache's ``decoded`` folder
    (``CacheLayout.from_store_dir(store_dir).decoded``, i.e. ``store_dir/../decoded``, shared with the
    network strategies), a path puts it there, False decodes chunk by chunk without caching.
    ``pool``: "avg" (global average) or an int g (g x g grid, flattened). ``precision``: "auto" |
    "fp32" | "bf16" | "fp16", "auto" resolved for extraction (see ``transferkit.runtime``).
    ``runtime``: "auto" | "torch" | "openvino" | "onnxruntime", what runs the network
    (``transferkit.runtime.resolve_extract_runtime``); the ONNX graphs the runtimes run are cached in
    ``CacheLayout.from_store_dir(store_dir).compiled``.
    When a process group of several processes is initialised (torchrun) this is a collective call:
    each rank computes a share of the chunks and all return the same store (``distributed.py``).
    """
    names = _check_layers(backbone, layers)
    pool = _check_pool(pool)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev, "extract")
    rt = resolve_extract_runtime(runtime, dev, prec)
    batch_size = _check_positive("batch_size", default_batch_size(dev) if batch_size is None else batch_size)
    if chunk_size is None:
        chunk_size = batch_size * max(1, round(DEFAULT_CHUNK_IMAGES / batch_size))
    chunk_size = _check_positive("chunk_size", chunk_size)
    store_dir = Path(store_dir)
    if decode_cache is False:
        decode_dir = None
    elif decode_cache is True:
        decode_dir = CacheLayout.from_store_dir(store_dir).decoded
    else:
        decode_dir = Path(decode_cache)
    n = len(dataset)
    if n == 0:
        raise DataError(f"Dataset {getattr(dataset, 'name', '')!r} has no images; nothing to extract.")

    stores, features, todo = _look_up(backbone, dataset, names, store_dir, pool, prec, rt)
    if todo:
        fingerprint = dataset.fingerprint
        with open_engine(backbone, todo, pool, runtime=rt, device=dev, precision=prec,
                         cache_dir=CacheLayout.from_store_dir(store_dir).compiled, forced=runtime != "auto") as engine:
            if engine.runtime != rt:  # "auto" fell back to PyTorch (warned): other keys
                rt = engine.runtime
                stores, features, todo = _look_up(backbone, dataset, names, store_dir, pool, prec, rt)
            if todo:
                _compute(backbone, dataset, {name: stores[name] for name in todo}, n=n, batch_size=batch_size,
                         chunk_size=chunk_size, device=dev, precision=prec, pool=pool, progress=progress,
                         decode_dir=decode_dir, engine=engine)
        if dataset.fingerprint != fingerprint or len(dataset) != n:
            # The data module dropped images that changed on disk since loading: the keys are stale.
            return extract_features(backbone, dataset, names, store_dir=store_dir, batch_size=batch_size,
                                    device=dev, precision=prec, pool=pool, progress=progress,
                                    decode_cache=decode_cache, chunk_size=chunk_size, runtime=runtime)
        for name in todo:
            arr = stores[name].read()
            if arr is None:
                raise StoreError(f"{stores[name].final} could not be read back right after writing it.")
            features[name] = arr
    return FeatureSet(
        features={name: features[name] for name in names},
        labels=np.asarray(dataset.labels),
        splits=np.asarray(dataset.splits),
        classes=list(dataset.classes),
        keys={name: stores[name].key for name in names},
        from_cache=not todo,
        store_paths={name: stores[name].final for name in names},
        precision=prec,
        pool=pool,
        computed=todo,
        runtime=rt,
    )


def _look_up(backbone: Any, dataset: Any, names: list[str], store_dir: Path, pool: str | int, precision: str,
             runtime: str) -> tuple[dict[str, LayerStore], dict[str, np.ndarray], list[str]]:
    """The stores of ``names`` under ``runtime``'s keys, the layers they already hold, the ones to compute."""
    n = len(dataset)
    metas = {name: layer_key_meta(backbone, dataset, name, pool, precision, runtime=runtime) for name in names}
    stores = {name: LayerStore(store_dir, sha256_json(m), m, n) for name, m in metas.items()}
    features: dict[str, np.ndarray] = {}
    for name in names:
        arr = stores[name].read()
        if arr is not None:
            features[name] = arr
            if stores[name].partial.is_dir():  # a run killed between its final rename and this cleanup
                shutil.rmtree(stores[name].partial, ignore_errors=True)
    return stores, features, [name for name in names if name not in features]


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass when the caller does not say.

    CPU: 16. Measured on the 2-core reference machine (mobilenetv1_075, 224x224, channels_last):
    fp32 7.0 / 7.7 / 11.6 / 15.6 ms per image at batch 8 / 16 / 32 / 64 (bf16: 4.1 / 3.7 / 4.5 / 6.4):
    big batches spill the activations out of the 2 MB L2 cache. CUDA: 64.
    """
    return 64 if device.type == "cuda" else 16


def _compute(backbone: Any, dataset: Any, stores: dict[str, LayerStore], *, n: int, batch_size: int,
             chunk_size: int, device: torch.device, precision: str, pool: str | int, progress: bool,
             decode_dir: Path | None, engine: Engine) -> None:
    # The runtime is in the keys already; in the layout too so that torchrun ranks that resolved
    # "auto" differently (a node without OpenVINO) are refused by Shard.agree instead of mixing stores.
    layout = {"n": n, "chunk_size": chunk_size, "batch_size": batch_size, "device": device.type,
              "runtime": engine.runtime}
    chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    # Under torchrun each rank computes a round-robin share of the missing chunks (distributed.py).
    shard = current_shard()
    pending = []
    if shard is None or shard.is_first:
        for st in stores.values():
            st.open_partial(layout)
        for s, e in chunks:
            missing = [name for name, st in stores.items() if st.chunk_dim(s, e) is None]
            if missing:
                pending.append((s, e, missing))
    if shard is not None:
        pending = shard.mine(shard.agree(layout, pending))
        decode_dir = decode_dir_for(shard, dataset, decode_dir, backbone.preprocessing)
        progress = progress and shard.is_first
    if pending:
        _run_chunks(backbone, dataset, stores, pending, n=n, batch_size=batch_size, device=device,
                    precision=precision, progress=progress, decode_dir=decode_dir, engine=engine)
        if dataset.fingerprint != stores[next(iter(stores))].meta["dataset"]:
            return  # images were dropped at decode time; the caller starts over with new keys
    if shard is not None:
        consolidate_shared(shard, list(stores.values()), chunks)
        return
    for st in stores.values():
        st.consolidate(chunks)


def _run_chunks(backbone: Any, dataset: Any, stores: dict[str, LayerStore],
                pending: list[tuple[int, int, list[str]]], *, n: int, batch_size: int, device: torch.device,
                precision: str, progress: bool, decode_dir: Path | None, engine: Engine) -> None:
    pre = backbone.preprocessing
    hw = (int(pre.input_size[1]), int(pre.input_size[2]))
    interpolation = str(pre.interpolation).lower()
    total = sum(e - s for s, e, _ in pending)
    label = (f"{getattr(backbone, 'name', 'features')} [{', '.join(stores)}] {precision} {device.type} "
             f"{engine.runtime}")
    with _progress_bar(progress) as bar:
        images: np.ndarray | None = None
        if decode_dir is not None:
            fingerprint = dataset.fingerprint
            if bar is not None:
                dtask = bar.add_task(f"decoding {getattr(dataset, 'name', '')}", total=n)
                images = _decode(dataset, hw, interpolation, decode_dir,
                                 lambda done, _total: bar.update(dtask, completed=done))
                bar.remove_task(dtask)
            else:
                images = _decode(dataset, hw, interpolation, decode_dir, False)
            if dataset.fingerprint != fingerprint:
                return
            if images.shape != (n, 3, *hw) or images.dtype != np.uint8:
                raise DataError(f"dataset.decode returned {images.dtype} {images.shape}; "
                                f"expected uint8 {(n, 3, *hw)}.")

        def load(s: int, e: int) -> np.ndarray:
            if images is not None:
                return np.array(images[s:e])  # a writable in-memory copy of the (mmap) slice
            part = _decode(dataset.subset(np.arange(s, e)), hw, interpolation, None, False)
            if part.shape != (e - s, 3, *hw):
                raise DataError(
                    f"Images {s}..{e - 1} of {getattr(dataset, 'name', 'the dataset')!r} changed on disk "
                    "since it was loaded (decode dropped some). Load the dataset again."
                )
            return np.ascontiguousarray(part)

        task = bar.add_task(label, total=total) if bar is not None else None
        with ThreadPoolExecutor(max_workers=1) as pool_ex:
            nxt = pool_ex.submit(load, pending[0][0], pending[0][1])
            for i, (s, e, missing) in enumerate(pending):
                x_chunk = nxt.result()
                if i + 1 < len(pending):  # decode / read the next chunk while this one runs
                    nxt = pool_ex.submit(load, pending[i + 1][0], pending[i + 1][1])
                outs: dict[str, list[np.ndarray]] = {name: [] for name in missing}
                for b in range(0, e - s, batch_size):
                    xb = x_chunk[b:b + batch_size]
                    feats = engine(xb, missing)
                    for name in missing:
                        outs[name].append(feats[name])
                    if bar is not None:
                        bar.advance(task, xb.shape[0])
                for name in missing:
                    stores[name].write_chunk(s, e, np.concatenate(outs[name]))
                if _after_chunk is not None:
                    _after_chunk(s, e)
                kill_point("features.chunk")


def _decode(dataset: Any, hw: tuple[int, int], interpolation: str, cache_dir: Path | None,
            progress: bool | Callable[[int, int], None]) -> np.ndarray:
    # ``progress`` (False or a callback(done, total)) keeps the data module from opening a second
    # live display while ours is active.
    if "progress" in inspect.signature(dataset.decode).parameters:
        return dataset.decode(hw, interpolation, cache_dir, progress=progress)
    return dataset.decode(hw, interpolation, cache_dir)


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    with bar:
        yield bar


# ------------------------------------------------------------------------ in-memory helpers
def compute_features(backbone: Any, images: np.ndarray, layers: Sequence[str] | str, *,
                     pool: str | int = "avg", batch_size: int | None = None, device: str | torch.device = "auto",
                     precision: str = "auto", runtime: str = "torch",
                     cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Features of in-memory uint8 images (N, 3, H, W) at ``layers``; no store (used by ``predict``).

    ``runtime`` defaults to "torch": prediction is mostly a few images, for which exporting and
    compiling a graph costs more than it saves; "auto" / "openvino" / "onnxruntime" as in
    ``extract_features``, with the graph cached in ``CacheLayout.of(cache_dir).compiled``.
    """
    names = _check_layers(backbone, layers)
    pool = _check_pool(pool)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev, "extract")
    rt = resolve_extract_runtime(runtime, dev, prec)
    batch_size = _check_positive("batch_size", default_batch_size(dev) if batch_size is None else batch_size)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"Expected images as a (N, 3, H, W) array; got shape {images.shape}.")
    outs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    with open_engine(backbone, names, pool, runtime=rt, device=dev, precision=prec,
                     cache_dir=CacheLayout.of(cache_dir).compiled, forced=runtime != "auto") as engine:
        for b in range(0, len(images), batch_size):
            for name, arr in engine(np.ascontiguousarray(images[b:b + batch_size]), names).items():
                outs[name].append(arr)
    return {name: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)) for name, v in outs.items()}
