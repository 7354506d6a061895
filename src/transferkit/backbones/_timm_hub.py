"""timm's pretrained weights: where they sit on this machine (no network), and loading them.

The Hugging Face hub cache and torch hub's checkpoint folder are read directly, so that
``available_backbones`` can answer offline and an offline ``load_backbone`` fails with a clear
message instead of a connection error.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import WeightsNotFoundError
from ..io import sha256_file
from ._timm_extra import EXTRA_TIMM_MODELS

LOCAL_WEIGHTS_FIX = (
    "Point transferkit at a local file instead: `--weights FILE` (Python: load_backbone(name, "
    "weights='FILE.safetensors')) or a backbone card JSON describing the architecture and its "
    "weights (see ../shared/weights/*.json for examples)."
)


def imagenet_class_names(model: nn.Module) -> list[str] | None:
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset
    except ImportError:
        return None
    subset = infer_imagenet_subset(model)
    if not subset:
        return None
    try:
        return list(ImageNetInfo(subset).label_descriptions())
    except Exception:
        return None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache timm downloads into (HF_HUB_CACHE / HF_HOME, as huggingface_hub sees them)."""
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
        return Path(os.environ.get("HF_HUB_CACHE") or Path(home) / "hub")


def hf_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def timm_cached_file(arch: str) -> Path | None:
    """The pretrained file timm would load for ``arch`` if it is already on this machine (no network)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch, allow_unregistered=True)
    if cfg is None:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, _, rev = hub_id.partition("@")
            names = [n for n in (getattr(cfg, "hf_hub_filename", None), "model.safetensors",
                                 "pytorch_model.bin") if n]
            for fn in names:
                hit = try_to_load_from_cache(repo, fn, cache_dir=str(hf_cache_dir()), revision=rev or None)
                if isinstance(hit, str):
                    return Path(hit)
    url = getattr(cfg, "url", None)
    if url:
        ckpt = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        if ckpt.is_file():
            return ckpt
    return None


def _state_dict_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def timm_pretrained(arch: str, kwargs: dict[str, Any]) -> tuple[nn.Module, str, str]:
    """timm's normal pretrained path (HF hub cache, downloading when online)."""
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch, allow_unregistered=True)
    if cfg is None or not cfg.has_weights:
        extra = " (registered by transferkit; its weights come from a backbone card)" \
            if arch.split(".")[0] in EXTRA_TIMM_MODELS else ""
        raise WeightsNotFoundError(f"timm knows no pretrained weights for {arch!r}{extra}. " + LOCAL_WEIGHTS_FIX)
    if not cfg.hf_hub_id and hf_offline() and timm_cached_file(arch) is None:
        # timm would fetch this URL-only checkpoint through torch.hub, which ignores HF_HUB_OFFLINE.
        raise WeightsNotFoundError(
            f"Pretrained weights for {arch!r} ({cfg.url}) are not in torch hub's cache "
            f"({Path(torch.hub.get_dir()) / 'checkpoints'}) and HF_HUB_OFFLINE is set. " + LOCAL_WEIGHTS_FIX)
    try:
        model = timm.create_model(arch, pretrained=True, **kwargs)
    except Exception as exc:  # offline hub errors, missing cache entries, connection errors...
        source = cfg.hf_hub_id or cfg.url
        raise WeightsNotFoundError(
            f"Pretrained weights for {arch!r} are not on this machine and could not be downloaded "
            f"(timm source: {source}; HF cache: {hf_cache_dir()}; error: {type(exc).__name__}: "
            f"{str(exc)[:200]}). " + LOCAL_WEIGHTS_FIX) from exc
    cached = timm_cached_file(arch)
    if cached is not None:
        return model, sha256_file(cached), f"timm:{cfg.hf_hub_id or cfg.url} ({cached})"
    return model, _state_dict_hash(model), f"timm:{cfg.hf_hub_id or cfg.url}"
