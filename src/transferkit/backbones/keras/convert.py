"""Keras layer tensors -> a PyTorch state dict, for a network whose modules carry Keras tags
(``layers.keras_tag``): which tensors are missing, unexpected or of the wrong shape is said in
Keras's own names and shapes, before anything is loaded.

Keras stores convolution kernels as (kh, kw, in, out), depthwise kernels as (kh, kw, in, 1) and
Dense kernels as (in, out); PyTorch wants (out, in, kh, kw), (in, 1, kh, kw) and (out, in).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ...errors import BackboneError
from .._weights import describe_mismatch
from .h5 import KerasWeights
from .layers import KERAS_KINDS

# Keras variable -> PyTorch parameter/buffer name
_TORCH_NAME = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
               "moving_mean": "running_mean", "moving_variance": "running_var"}


@dataclass(frozen=True)
class TaggedLayer:
    keras_name: str
    kind: str
    module_path: str
    module: nn.Module


def layout_of(model: nn.Module) -> list[TaggedLayer]:
    """The Keras layers ``model`` takes weights from, in module order."""
    return [TaggedLayer(m.keras_name, m.keras_kind, path, m)
            for path, m in model.named_modules() if hasattr(m, "keras_name")]


def _kernel_to_torch(kind: str, a: np.ndarray) -> np.ndarray:
    if kind in ("conv", "conv_bias"):
        return a.transpose(3, 2, 0, 1) if a.ndim == 4 else a
    if kind == "depthwise":
        return a.transpose(2, 3, 0, 1).reshape(-1, 1, *a.shape[:2]) if a.ndim == 4 else a
    if kind == "conv1x1_dense":
        return a.reshape(a.shape[-2], a.shape[-1]).T if a.ndim == 4 else a
    return a.T if a.ndim == 2 else a  # dense


def _keras_shape(kind: str, role: str, t: torch.Tensor) -> tuple[int, ...]:
    """The shape Keras stores ``role`` in, for the PyTorch tensor ``t`` it becomes."""
    s = tuple(t.shape)
    if role != "kernel":
        return s
    if kind in ("conv", "conv_bias"):
        return (s[2], s[3], s[1], s[0])
    if kind == "depthwise":
        return (s[2], s[3], s[0], 1)
    if kind == "conv1x1_dense":
        return (1, 1, s[1], s[0])
    return (s[1], s[0])


def keras_to_state_dict(weights: KerasWeights, model: nn.Module, *, arch: str, fix: str,
                        ignore: Collection[str] = (), rename: Callable[[list[str]], Mapping[str, str]] | None = None,
                        bgr_first_conv: str | None = None) -> dict[str, torch.Tensor]:
    """Map every tagged layer of ``model`` to its tensors in ``weights``; BackboneError naming each
    missing, unexpected or wrongly shaped Keras tensor otherwise (``fix`` says what to do).

    ``ignore``: file layers dropped on purpose (the classifier when it is not kept). ``rename``:
    file name -> canonical name (automatic Keras names). ``bgr_first_conv``: the Keras layer whose
    input channels are reversed, so a network trained on BGR input takes RGB.
    """
    names = rename(list(weights.layers)) if rename else {n: n for n in weights.layers}
    file_layers = {names[n]: lw for n, lw in weights.layers.items()}
    own = model.state_dict()
    expected = layout_of(model)
    wanted = {t.keras_name for t in expected}
    missing = [f"{t.keras_name} ({', '.join(KERAS_KINDS[t.kind])})" for t in expected
               if t.keras_name not in file_layers]
    unexpected = [n for n in file_layers if n not in wanted and n not in ignore]
    wrong: list[str] = []
    sd: dict[str, torch.Tensor] = {}
    for t in expected:
        lw = file_layers.get(t.keras_name)
        if lw is None:
            continue
        roles = KERAS_KINDS[t.kind]
        if lw.roles is not None and sorted(lw.roles) == sorted(roles):
            arrays = dict(zip(lw.roles, lw.arrays, strict=True))
        elif len(lw.arrays) == len(roles) and lw.roles is None:
            arrays = dict(zip(roles, lw.arrays, strict=True))
        else:
            got = ", ".join(lw.roles) if lw.roles else f"{len(lw.arrays)} unnamed"
            wrong.append(f"{t.keras_name}: holds [{got}], expected [{', '.join(roles)}]")
            continue
        for role, a in arrays.items():
            key = f"{t.module_path}.{_TORCH_NAME[role]}"
            want = _keras_shape(t.kind, role, own[key])
            if tuple(a.shape) != want:
                wrong.append(f"{t.keras_name}/{role}: file {tuple(a.shape)} vs {arch} {want}")
                continue
            converted = _kernel_to_torch(t.kind, a) if role == "kernel" else a
            if role == "kernel" and t.keras_name == bgr_first_conv:
                converted = converted[:, ::-1]
            sd[key] = torch.from_numpy(np.ascontiguousarray(converted))
    mismatch = describe_mismatch(missing, unexpected, wrong, missing_what="layer(s) missing from the file",
                                 wrong_what="with other tensors or shapes")
    if mismatch:
        raise BackboneError(f"{weights.path} does not fit Keras {arch}: {mismatch}. {fix}")
    return sd
