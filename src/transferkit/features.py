"""Feature extraction: one forward pass, several layers, streamed to a resumable on-disk store.

Store layout (one HDF5 file per layer, so a layer subset or superset only computes what is missing)::

    <store_dir>/<key>.h5            final features of one layer: dataset "features" (N, D) float32,
                                    attrs: key, meta (JSON), n, d, sha256 of the array, complete=1
    <store_dir>/<key>.partial/      work in progress of that layer:
        layout.json                 chunking (n, chunk_size, batch_size, device type) of the run
        0000000000-0000000256.npy   features of images [0, 256), written by atomic rename
        ...
    <store_dir>/decoded/            uint8 decode cache of the data module (``decode_cache=True``)

``key`` = sha256 of {weights hash, architecture, layer, pooling, preprocessing (input size, mean,
std, interpolation), dataset fingerprint, resolved precision, transferkit version, store format}.

Writes are atomic (``transferkit.io.atomic_path``): chunk files and the final file only ever appear
by rename of a complete temporary. A final file is trusted only when its completeness marker, key,
shape, dtype and sha256 all check out; anything else is treated as missing and recomputed (with a
``StoreWarning``). A run killed at any point (SIGKILL included) resumes from the chunks already on
disk. Every chunk is computed from the same images in the same batches (fixed chunk and batch
layout, recorded in ``layout.json``; eval mode; same precision), so a resumed run's features are
bit-identical to an uninterrupted run's on the same device.

Precision: ``precision="auto"`` is fp32 on the CPU and bf16 (else fp16) autocast on CUDA, always with
channels_last; ``precision="bf16"`` on a CPU with native bf16 is ~2.4x faster but moved the flowers5
linear probe by -0.36 points on average over 5 paired splits (hymenoptera -0.65), more than the 0.3
allowed, so "auto" does not use it on the CPU. Figures and the rule: ``transferkit.device``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from . import __version__
from .errors import ConfigError, DataError, StoreError
from .io import atomic_path, atomic_write_json, kill_point, sha256_json
from .runtime import inference_context, resolve_device, resolve_precision

STORE_FORMAT = 1
DEFAULT_CHUNK_IMAGES = 256
_STALE_TMP_SECONDS = 3600.0

# Test hook: called as ``_after_chunk(start, stop)`` after each chunk is safely on disk.
_after_chunk: Callable[[int, int], None] | None = None


class StoreWarning(UserWarning):
    """A feature-store file was unreadable, incomplete or inconsistent and is being recomputed."""


# --------------------------------------------------------------------------------- FeatureSet
@dataclass
class FeatureSet:
    """Pooled features of every image of a dataset at one or more layers.

    ``features[layer]`` is (N, D) float32 in dataset order; ``labels`` / ``splits`` are the
    dataset's; ``keys[layer]`` is the store key; ``store_paths[layer]`` the final .h5 file;
    ``from_cache`` is True when every layer was read from the store (the network did not run);
    ``computed`` lists the layers this call had to compute.
    """

    features: dict[str, np.ndarray]
    labels: np.ndarray
    splits: np.ndarray
    classes: list[str]
    keys: dict[str, str]
    from_cache: bool
    store_paths: dict[str, Path] = field(default_factory=dict)
    precision: str = "fp32"
    pool: str | int = "avg"
    computed: list[str] = field(default_factory=list)

    @property
    def layers(self) -> list[str]:
        return list(self.features)

    def __len__(self) -> int:
        return len(self.labels)

    def _mask(self, name: str) -> np.ndarray:
        mask = np.asarray(self.splits) == name
        if not mask.any():
            present = sorted(set(np.asarray(self.splits).tolist()))
            raise ConfigError(f"The features have no {name!r} split; splits present: {present}.")
        return mask

    def split(self, name: str, layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(X, y) of split ``name`` ("train"/"val"/"test") at ``layer`` (optional with one layer)."""
        if layer is None:
            if len(self.features) != 1:
                raise ConfigError(
                    f"These features hold several layers ({', '.join(self.features)}); pass layer=... "
                    "or use split_all()."
                )
            layer = next(iter(self.features))
        if layer not in self.features:
            raise ConfigError(f"No features for layer {layer!r}; extracted: {', '.join(self.features)}.")
        mask = self._mask(name)
        return self.features[layer][mask], np.asarray(self.labels)[mask]

    def split_all(self, name: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """({layer: X}, y) of split ``name`` for every layer."""
        mask = self._mask(name)
        return {k: v[mask] for k, v in self.features.items()}, np.asarray(self.labels)[mask]


# ------------------------------------------------------------------------------------ keys
def _preprocessing_dict(backbone: Any) -> dict[str, Any]:
    pre = backbone.preprocessing
    return {
        "input_size": [int(v) for v in pre.input_size],
        "mean": [float(v) for v in pre.mean],
        "std": [float(v) for v in pre.std],
        "interpolation": str(pre.interpolation).lower(),
    }


def layer_key_meta(backbone: Any, dataset: Any, layer: str, pool: str | int,
                   precision: str) -> dict[str, Any]:
    """Everything that determines the stored numbers of one layer (hashed into its key)."""
    return {
        "format": STORE_FORMAT,
        "transferkit": __version__,
        "weights_hash": str(backbone.weights_hash),
        "arch": str(getattr(backbone, "arch", getattr(backbone, "name", ""))),
        "layer": layer,
        "pool": pool,
        "preprocessing": _preprocessing_dict(backbone),
        "dataset": str(dataset.fingerprint),
        "n": len(dataset),
        "precision": precision,
    }


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


# ----------------------------------------------------------------------------- layer store
class LayerStore:
    """The final file and the partial-chunk folder of one layer key."""

    def __init__(self, store_dir: Path, key: str, meta: dict[str, Any], n: int):
        self.store_dir = Path(store_dir)
        self.key = key
        self.meta = meta
        self.n = n
        self.final = self.store_dir / f"{key}.h5"
        self.partial = self.store_dir / f"{key}.partial"

    # -- final file ------------------------------------------------------------------------
    def read(self) -> np.ndarray | None:
        """The stored (N, D) float32 array, or None when missing / incomplete / corrupt (warns)."""
        if not self.final.is_file():
            return None
        try:
            return self._read_checked()
        except (OSError, KeyError, ValueError, TypeError, _Invalid) as exc:
            warnings.warn(
                f"Feature store file {self.final} is unusable ({exc}); the layer "
                f"{self.meta.get('layer')!r} will be recomputed and the file replaced.",
                StoreWarning,
                stacklevel=3,
            )
            return None

    def _read_checked(self) -> np.ndarray:
        with _h5_open(self.final, "r") as f:
            attrs = f.attrs
            if not bool(attrs.get("complete", False)):
                raise _Invalid("no completeness marker")
            if attrs.get("key") != self.key:
                raise _Invalid(f"key {attrs.get('key')!r} != {self.key!r}")
            ds = f["features"]
            d = int(attrs["d"])
            if ds.shape != (self.n, d) or int(attrs["n"]) != self.n:
                raise _Invalid(f"shape {ds.shape} != ({self.n}, {d})")
            if ds.dtype != np.float32:
                raise _Invalid(f"dtype {ds.dtype} != float32")
            arr = np.empty((self.n, d), dtype=np.float32)
            if arr.size:
                ds.read_direct(arr)
            expected = attrs["sha256"]
        if hashlib.sha256(arr.tobytes()).hexdigest() != expected:
            raise _Invalid("checksum mismatch")
        return arr

    # -- partial chunks ----------------------------------------------------------------------
    def chunk_path(self, start: int, stop: int) -> Path:
        return self.partial / f"{start:010d}-{stop:010d}.npy"

    def open_partial(self, layout: dict[str, Any]) -> None:
        """Create the chunk folder, or reuse it when it was written with the same ``layout``."""
        layout_path = self.partial / "layout.json"
        if self.partial.is_dir():
            try:
                old = json.loads(layout_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
            if old != layout:
                if old is not None or any(self.partial.glob("*.npy")):
                    warnings.warn(
                        f"Discarding the partial extraction in {self.partial}: it was written with "
                        f"layout {old} and this run uses {layout}; it is recomputed from scratch.",
                        StoreWarning,
                        stacklevel=3,
                    )
                shutil.rmtree(self.partial, ignore_errors=True)
        if not layout_path.is_file():
            self.partial.mkdir(parents=True, exist_ok=True)
            atomic_write_json(layout_path, layout)

    def chunk_dim(self, start: int, stop: int) -> int | None:
        """D of a valid stored chunk, or None when absent (a corrupt chunk is removed, with a warning)."""
        path = self.chunk_path(start, stop)
        if not path.is_file():
            return None
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[0] == stop - start:
                return int(arr.shape[1])
            reason = f"shape {arr.shape} dtype {arr.dtype}"
        except (OSError, ValueError) as exc:
            reason = str(exc)
        warnings.warn(f"Removing unusable feature chunk {path} ({reason}); it is recomputed.",
                      StoreWarning, stacklevel=3)
        path.unlink(missing_ok=True)
        return None

    def write_chunk(self, start: int, stop: int, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != stop - start:
            raise StoreError(f"chunk [{start}, {stop}) of {self.final.name} has shape {arr.shape}")
        # Serialised in memory first: np.save into a file on a full disk raises an OSError without
        # errno ("N requested and M written"), a plain write says ENOSPC and atomic_path reports it.
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        with atomic_path(self.chunk_path(start, stop), suffix=".npy") as tmp:
            tmp.write_bytes(buf.getbuffer())

    def consolidate(self, chunks: Sequence[tuple[int, int]]) -> None:
        """Write the final file from every chunk (streamed, one chunk in memory) and drop the chunks."""
        self._remove_stale_temporaries()
        dims = {self.chunk_dim(s, e) for s, e in chunks}
        if None in dims or len(dims) != 1:
            if self.read() is not None:  # a concurrent run finished it first
                return
            raise StoreError(
                f"Cannot consolidate {self.final}: chunks missing or of different widths ({dims}). "
                f"Delete {self.partial} and run the extraction again."
            )
        d = int(dims.pop())  # type: ignore[arg-type]
        h = hashlib.sha256()
        with atomic_path(self.final, suffix=".h5") as tmp:
            with _h5_open(tmp, "w") as f:
                ds = f.create_dataset("features", shape=(self.n, d), dtype="float32")
                for s, e in chunks:
                    arr = np.ascontiguousarray(np.load(self.chunk_path(s, e), allow_pickle=False))
                    ds[s:e] = arr
                    h.update(arr.tobytes())
                f.attrs["key"] = self.key
                f.attrs["meta"] = json.dumps(self.meta, sort_keys=True)
                f.attrs["n"] = self.n
                f.attrs["d"] = d
                f.attrs["sha256"] = h.hexdigest()
                f.attrs["complete"] = True  # written last: the completeness marker
        kill_point("features.consolidated")
        shutil.rmtree(self.partial, ignore_errors=True)

    def _remove_stale_temporaries(self) -> None:
        # Temporaries of a run killed during consolidation (``atomic_path`` names them
        # ".<final name>.<random>.h5.tmp"); only old ones, a concurrent run may own a fresh one.
        now = time.time()
        for tmp in self.store_dir.glob(f".{self.final.name}.*.tmp"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                    tmp.unlink()


class _Invalid(Exception):
    pass


def _h5_open(path: Path, mode: str) -> h5py.File:
    # Files are replaced by rename, never modified in place: HDF5's file locks only get in the way
    # (they fail on some network file systems).
    try:
        return h5py.File(path, mode, locking=False)
    except TypeError:  # pragma: no cover - h5py < 3.5
        return h5py.File(path, mode)


# ------------------------------------------------------------------------------- extraction
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
) -> FeatureSet:
    """Pooled features of every image of ``dataset`` at ``layers``, from the store or one forward pass.

    Layers already in ``store_dir`` (same key) are read without decoding images or running the
    network; the missing ones are computed together in one pass, ``batch_size`` images at a time
    (default: 16 on the CPU, 64 on CUDA; see ``default_batch_size``),
    and streamed to disk in chunks of ``chunk_size`` images (default: 256 rounded to a multiple of
    ``batch_size``), so memory is bounded by a chunk, not by the dataset. ``decode_cache``: True
    keeps the data module's uint8 decode cache in ``store_dir/decoded``, a path puts it there, False
    decodes chunk by chunk without caching. ``pool``: "avg" (global average) or an int g (g x g
    grid, flattened). ``precision``: "auto" | "fp32" | "bf16" | "fp16" (see ``transferkit.device``).
    """
    names = _check_layers(backbone, layers)
    pool = _check_pool(pool)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    batch_size = _check_positive("batch_size", default_batch_size(dev) if batch_size is None else batch_size)
    if chunk_size is None:
        chunk_size = batch_size * max(1, round(DEFAULT_CHUNK_IMAGES / batch_size))
    chunk_size = _check_positive("chunk_size", chunk_size)
    store_dir = Path(store_dir)
    n = len(dataset)
    if n == 0:
        raise DataError(f"Dataset {getattr(dataset, 'name', '')!r} has no images; nothing to extract.")

    metas = {name: layer_key_meta(backbone, dataset, name, pool, prec) for name in names}
    stores = {name: LayerStore(store_dir, sha256_json(m), m, n) for name, m in metas.items()}
    features: dict[str, np.ndarray] = {}
    for name in names:
        arr = stores[name].read()
        if arr is not None:
            features[name] = arr
            if stores[name].partial.is_dir():  # a run killed between its final rename and this cleanup
                shutil.rmtree(stores[name].partial, ignore_errors=True)
    todo = [name for name in names if name not in features]
    if todo:
        fingerprint = dataset.fingerprint
        _compute(backbone, dataset, {name: stores[name] for name in todo}, n=n, batch_size=batch_size,
                 chunk_size=chunk_size, device=dev, precision=prec, pool=pool, progress=progress,
                 decode_cache=decode_cache)
        if dataset.fingerprint != fingerprint or len(dataset) != n:
            # The data module dropped images that changed on disk since loading: the keys are stale.
            return extract_features(backbone, dataset, names, store_dir=store_dir, batch_size=batch_size,
                                    device=dev, precision=prec, pool=pool, progress=progress,
                                    decode_cache=decode_cache, chunk_size=chunk_size)
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
    )


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass when the caller does not say.

    CPU: 16. Measured on the 2-core reference machine (mobilenetv1_075, 224x224, channels_last):
    fp32 7.0 / 7.7 / 11.6 / 15.6 ms per image at batch 8 / 16 / 32 / 64 (bf16: 4.1 / 3.7 / 4.5 / 6.4):
    big batches spill the activations out of the 2 MB L2 cache. CUDA: 64.
    """
    return 64 if device.type == "cuda" else 16


def _compute(backbone: Any, dataset: Any, stores: dict[str, LayerStore], *, n: int, batch_size: int,
             chunk_size: int, device: torch.device, precision: str, pool: str | int, progress: bool,
             decode_cache: bool | str | Path) -> None:
    layout = {"n": n, "chunk_size": chunk_size, "batch_size": batch_size, "device": device.type}
    for st in stores.values():
        st.open_partial(layout)
    chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    pending = []
    for s, e in chunks:
        missing = [name for name, st in stores.items() if st.chunk_dim(s, e) is None]
        if missing:
            pending.append((s, e, missing))
    if pending:
        _run_chunks(backbone, dataset, stores, pending, n=n, batch_size=batch_size, device=device,
                    precision=precision, pool=pool, progress=progress, decode_cache=decode_cache)
        if dataset.fingerprint != stores[next(iter(stores))].meta["dataset"]:
            return  # images were dropped at decode time; the caller starts over with new keys
    for st in stores.values():
        st.consolidate(chunks)


def _run_chunks(backbone: Any, dataset: Any, stores: dict[str, LayerStore],
                pending: list[tuple[int, int, list[str]]], *, n: int, batch_size: int, device: torch.device,
                precision: str, pool: str | int, progress: bool, decode_cache: bool | str | Path) -> None:
    pre = backbone.preprocessing
    hw = (int(pre.input_size[1]), int(pre.input_size[2]))
    interpolation = str(pre.interpolation).lower()
    total = sum(e - s for s, e, _ in pending)
    label = f"{getattr(backbone, 'name', 'features')} [{', '.join(stores)}] {precision} {device.type}"
    with _progress_bar(progress) as bar:
        images: np.ndarray | None = None
        if decode_cache is not False:
            cache_dir = Path(decode_cache) if not isinstance(decode_cache, bool) else next(
                iter(stores.values())).store_dir / "decoded"
            fingerprint = dataset.fingerprint
            if bar is not None:
                dtask = bar.add_task(f"decoding {getattr(dataset, 'name', '')}", total=n)
                images = _decode(dataset, hw, interpolation, cache_dir,
                                 lambda done, _total: bar.update(dtask, completed=done))
                bar.remove_task(dtask)
            else:
                images = _decode(dataset, hw, interpolation, cache_dir, False)
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
        with _prepared(backbone.model, device) as model_device, ThreadPoolExecutor(max_workers=1) as pool_ex:
            nxt = pool_ex.submit(load, pending[0][0], pending[0][1])
            for i, (s, e, missing) in enumerate(pending):
                x_chunk = nxt.result()
                if i + 1 < len(pending):  # decode / read the next chunk while this one runs
                    nxt = pool_ex.submit(load, pending[i + 1][0], pending[i + 1][1])
                outs: dict[str, list[np.ndarray]] = {name: [] for name in missing}
                for b in range(0, e - s, batch_size):
                    xb = torch.from_numpy(x_chunk[b:b + batch_size])
                    feats = _forward(backbone, xb, missing, pool, model_device, precision)
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


def _forward(backbone: Any, xb: torch.Tensor, layers: list[str], pool: str | int, device: torch.device,
             precision: str) -> dict[str, np.ndarray]:
    if device.type == "cuda":
        xb = xb.pin_memory().to(device, non_blocking=True)
    xb = xb.contiguous(memory_format=torch.channels_last)
    with inference_context(device, precision):
        out = backbone.forward_layers(xb, layers, pool=pool)
    return {name: out[name].float().cpu().numpy() for name in layers}


@contextlib.contextmanager
def _prepared(model: torch.nn.Module, device: torch.device) -> Iterator[torch.device]:
    """Eval mode, on ``device``, channels_last; restored afterwards (safetensors needs contiguous)."""
    was_training = model.training
    first = next(model.parameters(), None)
    old_device = first.device if first is not None else torch.device("cpu")
    model.eval()
    model.to(device=device, memory_format=torch.channels_last)
    try:
        yield device
    finally:
        model.to(device=old_device, memory_format=torch.contiguous_format)
        model.train(was_training)


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
                     precision: str = "auto") -> dict[str, np.ndarray]:
    """Features of in-memory uint8 images (N, 3, H, W) at ``layers``; no store (used by ``predict``)."""
    names = _check_layers(backbone, layers)
    pool = _check_pool(pool)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    batch_size = _check_positive("batch_size", default_batch_size(dev) if batch_size is None else batch_size)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"Expected images as a (N, 3, H, W) array; got shape {images.shape}.")
    outs: dict[str, list[np.ndarray]] = {name: [] for name in names}
    with _prepared(backbone.model, dev):
        for b in range(0, len(images), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(images[b:b + batch_size]))
            for name, arr in _forward(backbone, xb, names, pool, dev, prec).items():
                outs[name].append(arr)
    return {name: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)) for name, v in outs.items()}


def write_feature_file(fs: FeatureSet, path: str | Path) -> Path:
    """Export a FeatureSet to one self-describing HDF5 file (atomically): one dataset per layer
    under ``features/``, plus ``labels``, ``splits`` and attrs ``classes``, ``keys``, ``precision``."""
    path = Path(path)
    with atomic_path(path, suffix=".h5") as tmp, _h5_open(tmp, "w") as f:
        grp = f.create_group("features")
        for name, arr in fs.features.items():
            grp.create_dataset(name, data=np.asarray(arr, dtype=np.float32))
        f.create_dataset("labels", data=np.asarray(fs.labels, dtype=np.int64))
        f.create_dataset("splits", data=np.asarray(fs.splits).astype("S"))
        f.attrs["classes"] = json.dumps(list(fs.classes))
        f.attrs["keys"] = json.dumps(fs.keys, sort_keys=True)
        f.attrs["precision"] = fs.precision
        f.attrs["pool"] = json.dumps(fs.pool)
        f.attrs["transferkit"] = __version__
    return path
