"""Read the weights of a Keras model from its HDF5 file with h5py: never unpickles, needs no Keras.

Two layouts exist:

- **legacy (Keras 2, and Keras 3's ``model.save('x.h5')``)**: the layer names in the attribute
  ``layer_names`` (of the root, or of a ``model_weights`` group for a whole saved model); each
  layer's group lists its tensors in ``weight_names`` (``block1_conv1/kernel:0``; Keras 3 drops
  the ``:0``). This is what ``~/.keras/models/*.h5`` from Keras Applications are.
- **Keras 3 ``.weights.h5``** (``model.save_weights``, also inside a ``.keras`` zip as
  ``model.weights.h5``): ``layers/<key>/vars/0``, ``1``, ... in the layer's own variable order, with
  no variable names; the layer's name is the ``vars`` group's ``name`` attribute (the key where that
  attribute is absent, as in early Keras 3 releases).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import BackboneError

LEGACY = "keras2-legacy-h5"
KERAS3 = "keras3-weights-h5"


@dataclass(frozen=True)
class KerasLayerWeights:
    """One Keras layer's tensors in its own order; ``roles`` are their names (``kernel``, ``gamma``,
    ...) when the file records them (legacy files), else None."""

    name: str
    arrays: tuple[np.ndarray, ...]
    roles: tuple[str, ...] | None


@dataclass(frozen=True)
class KerasWeights:
    path: Path
    format: str
    layers: dict[str, KerasLayerWeights]  # only the layers that hold tensors, in file order


def _text(v: object) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _role(weight_name: str) -> str:
    role = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
    return "kernel" if role == "depthwise_kernel" else role  # Keras 2 DepthwiseConv2D's name


def _array(ds: object, where: str) -> np.ndarray:
    import h5py

    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiu":
        raise BackboneError(f"{where} is not a numeric tensor; this is not a Keras weights file.")
    return np.asarray(ds[()], dtype=np.float32)


def _read_legacy(root: object, path: Path) -> dict[str, KerasLayerWeights]:
    layers: dict[str, KerasLayerWeights] = {}
    for lname in map(_text, root.attrs["layer_names"]):
        group = root.get(lname)
        names = [_text(n) for n in (group.attrs.get("weight_names", []) if group is not None else [])]
        if not names:
            continue
        arrays = tuple(_array(group.get(n), f"{path}: {lname}/{n}") for n in names)
        layers[lname] = KerasLayerWeights(lname, arrays, tuple(_role(n) for n in names))
    return layers


def _read_keras3(root: object, path: Path) -> dict[str, KerasLayerWeights]:
    import h5py

    layers: dict[str, KerasLayerWeights] = {}

    def visit(key: str, obj: object) -> None:
        if not (isinstance(obj, h5py.Group) and key.endswith("/vars") and len(obj)):
            return
        lname = _text(obj.attrs.get("name", key.rsplit("/", 2)[-2]))
        order = sorted(obj, key=lambda k: int(k) if k.isdigit() else -1)
        if not all(k.isdigit() for k in order):
            raise BackboneError(f"{path}: {key} holds {order}; a Keras 3 weights file numbers its tensors.")
        if lname in layers:
            raise BackboneError(
                f"{path}: two layers are named {lname!r} (a model nested in another?); save the inner "
                "Keras Applications model on its own (inner_model.save_weights('x.weights.h5')).")
        layers[lname] = KerasLayerWeights(lname, tuple(_array(obj[k], f"{path}: {key}/{k}") for k in order), None)

    root.visititems(visit)
    return layers


def read_keras_weights(path: str | Path) -> KerasWeights:
    """Every weight tensor of a Keras ``.h5`` / ``.weights.h5`` / ``.keras`` file, by layer name."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"Keras weights file {path} does not exist (or is not a file).")
    source: object = str(path)
    if zipfile.is_zipfile(path):  # a .keras archive: the weights are its model.weights.h5
        with zipfile.ZipFile(path) as zf:
            if "model.weights.h5" not in zf.namelist():
                raise BackboneError(f"{path} is a zip archive without model.weights.h5; not a .keras file.")
            source = io.BytesIO(zf.read("model.weights.h5"))
    elif not h5py.is_hdf5(str(path)):
        raise BackboneError(
            f"{path} is not an HDF5 file. transferkit reads Keras weights saved as .h5 (Keras 2, or "
            "Keras 3's model.save('x.h5')), .weights.h5 (Keras 3 model.save_weights) or .keras.")
    with h5py.File(source, "r") as f:
        weights_root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in weights_root.attrs:
            layers, fmt = _read_legacy(weights_root, path), LEGACY
        elif isinstance(f.get("layers"), h5py.Group):
            layers, fmt = _read_keras3(f["layers"], path), KERAS3
        else:
            raise BackboneError(
                f"{path} is HDF5 but holds no Keras weights (neither a 'layer_names' attribute nor a "
                f"'layers' group; top-level keys: {sorted(f)[:8]}).")
    if not layers:
        raise BackboneError(f"{path} holds no weight tensors.")
    return KerasWeights(path, fmt, layers)
