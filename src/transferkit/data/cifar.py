"""CIFAR-10 / CIFAR-100 in the "python version" layout torchvision downloads.

Those batches are pickle files. ``pickle.load`` on a file from disk runs whatever the file
says (any importable callable with any arguments), so a doctored ``data_batch_1`` would be
arbitrary code execution. We read them with :class:`RestrictedUnpickler`, which resolves
only the three globals the real batches need to rebuild their numpy ``data`` array
(``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``); every other
global is refused with :class:`UnsafeFileError`. (Batches re-saved by Python 3 at protocol
2 also spell bytes as ``_codecs.encode(text, "latin1")``; that is allowed for latin-1 only.)
The rest of a batch is plain dicts, lists, ints, bytes and strings, which unpickling builds
without any lookup. The result is then
validated (uint8 array of shape (N, 3072), N integer labels in range).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, UnsafeFileError
from .assemble import finish_arrays
from .dataset import ImageDataset

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode``: how Python 3 pickles bytes at protocol <= 2.

    The real function looks up any codec by name (zlib, bz2, ...); only latin-1 is allowed.
    """
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") not in (
        "latin1",
        "iso88591",
    ):
        raise UnsafeFileError(f"CIFAR batch asks for _codecs.encode with encoding {encoding!r}; refused.")
    return text.encode("latin1", errors)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild plain containers and numpy arrays, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"{getattr(self, 'source', 'a CIFAR batch')} asks to load {module}.{name}, which a "
                "CIFAR batch never needs; refused (unpickling it could run arbitrary code). "
                "Download the dataset again from its official source."
            ) from None


def restricted_load(path: Path) -> Any:
    data = path.read_bytes()
    up = RestrictedUnpickler(io.BytesIO(data), encoding="latin1")
    up.source = str(path)  # type: ignore[attr-defined]
    try:
        return up.load()
    except UnsafeFileError:
        raise
    except Exception as exc:
        raise DataError(f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc}).") from None


def _key(d: Any, *names: str, path: Path) -> Any:
    if not isinstance(d, dict):
        raise DataError(f"{path} should hold a dict (CIFAR python batch); got {type(d).__name__}.")
    for name in names:
        for k in (name, name.encode()):
            if k in d:
                return d[k]
    raise DataError(f"{path} has no key {names[0]!r} (keys: {sorted(map(str, d))}); not a CIFAR batch.")


def _text(x: Any) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def find_cifar_dir(folder: Path) -> tuple[str, Path] | None:
    """('cifar10' | 'cifar100', batches folder) when ``folder`` is (or directly holds) one."""
    for cand in (folder, folder / "cifar-10-batches-py", folder / "cifar-100-python"):
        if (cand / "batches.meta").is_file() and (cand / "data_batch_1").is_file():
            return "cifar10", cand
        if (cand / "meta").is_file() and (cand / "train").is_file() and (cand / "test").is_file():
            return "cifar100", cand
    return None


def _batch(path: Path, label_keys: tuple[str, ...], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = restricted_load(path)
    data = _key(d, "data", path=path)
    labels = np.asarray(_key(d, *label_keys, path=path))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{path}: 'data' should be a uint8 array of shape (N, 3072); got "
            f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}."
        )
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: expected {data.shape[0]} integer labels; got shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{path}: labels must lie in 0..{n_classes - 1}.")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def load_cifar(kind: str, folder: Path) -> dict[str, Any]:
    """Arrays (N,32,32,3) uint8, labels, splits, classes and per-item sources."""
    if kind == "cifar10":
        meta = restricted_load(folder / "batches.meta")
        classes = [_text(c) for c in _key(meta, "label_names", path=folder / "batches.meta")]
        files = [(f"data_batch_{i}", "train") for i in range(1, 6)] + [("test_batch", "test")]
        label_keys: tuple[str, ...] = ("labels",)
    else:
        meta = restricted_load(folder / "meta")
        classes = [_text(c) for c in _key(meta, "fine_label_names", path=folder / "meta")]
        files = [("train", "train"), ("test", "test")]
        label_keys = ("fine_labels",)
    imgs, labs, splits, sources = [], [], [], []
    missing = [f for f, _ in files if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"CIFAR folder {folder} lacks {', '.join(missing)}; download it again (it should hold "
            f"{', '.join(f for f, _ in files)})."
        )
    for fname, split in files:
        x, y = _batch(folder / fname, label_keys, len(classes))
        imgs.append(x)
        labs.append(y)
        splits += [split] * len(y)
        sources += [f"{folder / fname}#{i}" for i in range(len(y))]
    return {
        "images": np.concatenate(imgs) if imgs else np.zeros((0, 32, 32, 3), np.uint8),
        "labels": np.concatenate(labs) if labs else np.zeros(0, np.int64),
        "splits": splits,
        "sources": sources,
        "classes": classes,
    }


def load_cifar_dataset(kind: str, folder: Path, **kw: Any) -> ImageDataset:
    """The CIFAR folder ``folder`` (``kind`` from :func:`find_cifar_dir`) as an :class:`ImageDataset`
    whose train / test splits are the batches'."""
    c = load_cifar(kind, folder)
    return finish_arrays(
        name=kind,
        root=str(folder),
        images=c["images"],
        labels=c["labels"],
        class_names=c["classes"],
        sources=c["sources"],
        given_splits=c["splits"],
        split_origin="cifar",
        where=str(folder),
        notes=[],
        **kw,
    )
