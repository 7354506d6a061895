"""The feature store: one keyed HDF5 file per layer, built from atomic, resumable chunks.

Layout (one file per layer, so a layer subset or superset only computes what is missing)::

    <store_dir>/<key>.h5            final features of one layer: dataset "features" (N, D) float32,
                                    attrs: key, meta (JSON), n, d, sha256 of the array, complete=1
    <store_dir>/<key>.partial/      work in progress of that layer:
        layout.json                 chunking (n, chunk_size, batch_size, device type) of the run
        0000000000-0000000256.npy   features of images [0, 256), written by atomic rename
        ...

``<store_dir>`` is ``CacheLayout.features`` (``<cache>/features``); the decoded images the chunks
are computed from live next to it, in ``CacheLayout.decoded`` (``transferkit.runtime``).

``key`` = sha256 of {weights hash, architecture, layer, pooling, preprocessing (input size, mean,
std, interpolation), dataset fingerprint, resolved precision, extraction runtime (torch, openvino,
onnxruntime: their features agree within 1e-4 relative, not bit for bit, so they never mix in one
file), transferkit version, store format}.

Writes are atomic (``transferkit.io.atomic_path``): chunk files and the final file only ever appear
by rename of a complete temporary. A final file is trusted only when its completeness marker, key,
shape, dtype and sha256 all check out; anything else is treated as missing and recomputed (with a
``StoreWarning``). A run killed at any point (SIGKILL included) resumes from the chunks already on
disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import __version__
from ..errors import StoreError
from ..io import atomic_path, atomic_write_json, kill_point
from .featureset import FeatureSet

STORE_FORMAT = 1
_STALE_TMP_SECONDS = 3600.0


class StoreWarning(UserWarning):
    """A feature-store file was unreadable, incomplete or inconsistent and is being recomputed."""


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
                   precision: str, *, runtime: str) -> dict[str, Any]:
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
        "runtime": runtime,
    }


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



# --------------------------------------------------------------------------------- export
def write_feature_file(fs: FeatureSet, path: str | Path) -> Path:
    """Export a FeatureSet to one self-describing HDF5 file (atomically): one dataset per layer
    under ``features/``, plus ``labels``, ``splits`` and attrs ``classes``, ``keys``, ``precision``, ``runtime``."""
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
        f.attrs["runtime"] = fs.runtime
        f.attrs["pool"] = json.dumps(fs.pool)
        f.attrs["transferkit"] = __version__
    return path
