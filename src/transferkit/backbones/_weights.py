"""Reading weight files safely and loading them into a network.

Never unpickles: ``.safetensors`` through safetensors, ``.pth/.pt/.bin/.ckpt`` only through
``torch.load(weights_only=True)``, which refuses any pickle that would call arbitrary code.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import BackboneError, UnsafeFileError

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
PICKLE_SUFFIXES = (".pkl", ".pickle")

# Containers training scripts commonly wrap a state dict in.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
# Prefixes added by DataParallel / DistributedDataParallel and torch.compile.
_STRIP_PREFIXES = ("module.", "_orig_mod.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat ``name -> tensor`` state dict from ``path`` without running any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"Weights file {path} does not exist (or is not a file).")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: object = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise BackboneError(f"Cannot read safetensors file {path}: {exc}") from exc
    elif suffix in TORCH_SUFFIXES:
        try:
            raw = torch.load(str(path), weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as exc:
            raise UnsafeFileError(
                f"Refused to load {path}: it is a pickle that references objects other than tensors "
                "and plain containers, and unpickling it could run arbitrary code. transferkit only "
                "reads .pth/.pt files with torch.load(weights_only=True). If you trust the file, "
                "convert it yourself to safetensors (safetensors.torch.save_file(state_dict, "
                "'weights.safetensors')) and pass that instead."
            ) from exc
        except Exception as exc:  # corrupt zip, truncated file, ...
            raise BackboneError(f"Cannot read PyTorch weights file {path}: {exc}") from exc
    elif suffix in PICKLE_SUFFIXES:
        raise UnsafeFileError(
            f"Refused to load {path}: plain pickle files are never loaded (unpickling can run "
            "arbitrary code). Save the weights as .safetensors instead."
        )
    else:
        raise BackboneError(
            f"Unsupported weights file type {path.suffix!r} for {path}; expected one of "
            f"{', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}."
        )
    return _unwrap(raw, path)


def _unwrap(raw: object, path: Path) -> dict[str, torch.Tensor]:
    obj = raw
    for _ in range(3):  # {'state_dict': {'model': {...}}} at most this deep in practice
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise BackboneError(
            f"{path} does not hold a state dict (got {type(obj).__name__}); expected a mapping of "
            "parameter names to tensors, optionally wrapped as {'state_dict': ...} or {'model': ...}."
        )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise BackboneError(
            f"{path} holds no tensors at the top level (keys: {sorted(map(str, obj))[:8]}); expected a "
            "state dict, optionally wrapped as {'state_dict': ...} or {'model': ...}."
        )
    for prefix in _STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def classifier_out_features(sd: Mapping[str, torch.Tensor], classifier_name: str) -> int:
    """Number of classes of the classifier ``classifier_name`` stored in ``sd`` (0 when absent)."""
    w = sd.get(f"{classifier_name}.weight")
    if w is None or w.ndim < 1:
        return 0
    return int(w.shape[0])


def load_into(model: nn.Module, sd: Mapping[str, torch.Tensor], *, source: str, arch: str,
              ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Strictly load ``sd`` into ``model``; raise BackboneError listing what does not match."""
    sd = {k: v for k, v in sd.items() if not k.startswith(ignore_prefixes)} if ignore_prefixes else dict(sd)
    own = model.state_dict()
    # BatchNorm fills in a missing ``num_batches_tracked`` itself (older checkpoints lack it).
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    wrong_shape = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    mismatch = describe_mismatch(missing, unexpected, wrong_shape)
    if mismatch:
        raise BackboneError(
            f"Weights {source} do not fit architecture {arch!r}: {mismatch}. Check that "
            "the architecture name and its model_kwargs (in the backbone card) match the weights."
        )
    model.load_state_dict(sd, strict=True)


def describe_mismatch(missing: list[str], unexpected: list[str], wrong: list[str], *,
                      missing_what: str = "missing from the file",
                      wrong_what: str = "with a different shape") -> str:
    """"N missing ...; N unexpected in the file: ...; N with ...", the first few of each named; ""
    when everything fits. Shared by every weights loader so their refusals read alike."""
    parts = []
    if missing:
        parts.append(f"{len(missing)} {missing_what}: {_head(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected in the file: {_head(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} {wrong_what}: {_head(wrong)}")
    return "; ".join(parts)


def _head(items: list[str], n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
