"""``available_backbones``: what can be built here, and whose pretrained weights are on this machine."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._architectures import arch_family
from ._cards import CARD_FILENAME, looks_like_card, read_card
from ._timm_extra import register_timm_extras
from ._timm_hub import timm_cached_file
from ._torchvision import TORCHVISION_ARCHS

# Classic CNNs offered by `available_backbones` (any other timm name works with load_backbone too).
CURATED_TIMM = (
    "resnet18", "resnet50", "vgg16", "inception_v3", "mobilenetv2_035", "mobilenetv2_100",
    "mobilenetv3_large_100", "efficientnet_b0", "convnext_tiny",
)  # fmt: skip


def available_backbones(search_dirs: Iterable[str | os.PathLike[str]] = ()) -> list[dict[str, Any]]:
    """Backbones that can be built, each with whether its pretrained weights are on this machine.

    Never touches the network: looks in the Hugging Face hub cache and torch hub's checkpoints dir.
    Each row: name, spec (what to pass to load_backbone), architecture, kind ("timm" | "torchvision" |
    "card"), family ("timm" | "torchvision"), weights_available (alias pretrained_available),
    weights (local file or None), source (hub id / URL / card path), error (broken cards only).
    """
    from timm.models import get_pretrained_cfg

    register_timm_extras()
    rows: list[dict[str, Any]] = []

    def row(name: str, spec: str, arch: str | None, kind: str, family: str | None, weights: Path | None,
            available: bool, source: str | None, **more: Any) -> None:
        rows.append({"name": name, "spec": spec, "architecture": arch, "kind": kind, "family": family,
                     "weights_available": available, "pretrained_available": available,
                     "weights": str(weights) if weights else None, "source": source, **more})

    for arch in CURATED_TIMM:
        f = timm_cached_file(arch)
        cfg = get_pretrained_cfg(arch, allow_unregistered=True)
        src = (getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None)) if cfg is not None else None
        row(arch, arch, arch, "timm", "timm", f, f is not None, src or "no pretrained weights in timm")
    for arch, tv in TORCHVISION_ARCHS.items():
        ck = tv.hub_checkpoint()
        row(arch, arch, arch, "torchvision", "torchvision", ck if ck.is_file() else None, ck.is_file(),
            tv.weights_enum().url)
    for d in search_dirs:
        d = Path(d)
        candidates: list[Path] = []
        if d.is_file() and d.suffix == ".json":
            candidates = [d]
        elif d.is_dir():
            candidates = sorted(d.glob("*.json")) + sorted(d.glob(f"*/{CARD_FILENAME}"))
            if (d / CARD_FILENAME).is_file():
                candidates.insert(0, d / CARD_FILENAME)
        for c in candidates:
            if not looks_like_card(c):
                continue
            spec = str(c.parent) if c.name == CARD_FILENAME else str(c)
            try:
                card = read_card(c)
                family = arch_family(card.architecture)
                ok = card.weights is not None and card.weights.is_file()
                row(card.name, spec, card.architecture, "card", family, card.weights if ok else None, ok, spec)
            except Exception as exc:  # one broken card must not hide the others
                row(c.stem, spec, None, "card", None, None, False, spec, error=str(exc))
    return rows
