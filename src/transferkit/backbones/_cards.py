"""Backbone cards: small JSON files describing an architecture, its weights and preprocessing.

A card names its architecture through a registry only (timm's, plus transferkit's torchvision
wrappers); it can never import or evaluate Python. Its ``model_kwargs`` are plain JSON values.
Its weights path is relative to the card and may not leave the card's folder unless the caller
says ``allow_outside_weights=True``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BackboneError, UnsafeFileError
from ..io import read_json

CARD_FILENAME = "backbone.json"
CARD_FORMAT = "transferkit-backbone-card/1"
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")

# model_kwargs a card may not set: they would load weights from elsewhere (bypassing the path
# checks), change what the model returns, or duplicate fields the card has on its own.
FORBIDDEN_KWARGS = frozenset({
    "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_strict", "checkpoint_path",
    "cache_dir", "features_only", "feature_cfg", "feature_cls", "out_indices", "num_classes",
    "weights", "progress", "scriptable", "exportable",
})


@dataclass(frozen=True)
class Card:
    """A parsed, validated backbone card."""

    path: Path
    name: str
    architecture: str
    model_kwargs: dict[str, Any]
    weights: Path | None
    num_classes: int | None
    input_size: tuple[int, int, int] | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    interpolation: str | None
    source_classes: Path | None
    raw: dict[str, Any] = field(repr=False)


def _fail(path: Path, field_name: str, msg: str) -> BackboneError:
    return BackboneError(f"Backbone card {path}: field {field_name!r} {msg}")


def _is_plain_json(v: Any, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if v is None or isinstance(v, bool | int | str):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list):
        return all(_is_plain_json(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _is_plain_json(x, depth + 1) for k, x in v.items())
    return False


def resolve_card_path(path: Path, rel: str, field_name: str, *, allow_outside: bool) -> Path:
    """Resolve a path written in a card, refusing one that leaves the card's folder."""
    card_dir = path.parent
    if not isinstance(rel, str) or not rel.strip():
        raise _fail(path, field_name, f"must be a non-empty relative file path; got {rel!r}.")
    p = Path(os.path.expanduser(rel)) if allow_outside else Path(rel)
    escapes = p.is_absolute() or os.path.normpath(rel).split(os.sep)[0] == ".." or rel.startswith("~")
    if escapes and not allow_outside:
        raise UnsafeFileError(
            f"Backbone card {path}: {field_name} {rel!r} points outside the card's folder {card_dir}. "
            "A card may only name files next to it (a relative path without '..'). Move the file "
            "into the card's folder, or pass allow_outside_weights=True (CLI: --allow-outside-weights) "
            "if you trust this card."
        )
    return Path(os.path.normpath(p if p.is_absolute() else card_dir / p))


def _triple(path: Path, raw: dict[str, Any], key: str, positive: bool = False) -> tuple[float, ...] | None:
    v = raw.get(key)
    if v is None:
        return None
    if (not isinstance(v, list) or len(v) != 3
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)):
        raise _fail(path, key, f"must be a list of 3 numbers (one per RGB channel); got {v!r}.")
    if positive and not all(x > 0 for x in v):
        raise _fail(path, key, f"must be positive; got {v!r}.")
    return tuple(float(x) for x in v)


def read_card(path: str | Path, *, allow_outside_weights: bool = False) -> Card:
    """Parse and validate a backbone card (JSON file, or a folder holding ``backbone.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILENAME
    if not path.is_file():
        raise BackboneError(f"Backbone card {path} does not exist.")
    try:
        raw = read_json(path)
    except Exception as exc:
        raise BackboneError(f"Backbone card {path} cannot be read: {exc}") from exc
    if not isinstance(raw, dict):
        raise BackboneError(f"Backbone card {path} must hold a JSON object; got {type(raw).__name__}.")

    arch = raw.get("architecture")
    if not isinstance(arch, str) or not arch.strip():
        raise _fail(path, "architecture",
                    f"must name a registered architecture (e.g. 'resnet18'); got {arch!r}.")

    kwargs = raw.get("model_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise _fail(path, "model_kwargs", f"must be a JSON object; got {type(kwargs).__name__}.")
    if not _is_plain_json(kwargs):
        raise _fail(path, "model_kwargs", "may only hold plain JSON values (numbers, strings, booleans, "
                    "null, lists and objects of these).")
    bad = sorted(FORBIDDEN_KWARGS.intersection(kwargs))
    if bad:
        raise _fail(path, "model_kwargs", f"may not set {bad}: weights come from the card's 'weights' "
                    "field and the number of classes from 'num_classes'.")

    weights = raw.get("weights")
    weights_path = None
    if weights is not None:
        weights_path = resolve_card_path(path, weights, "weights", allow_outside=allow_outside_weights)

    num_classes = raw.get("num_classes")
    if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                    or num_classes < 0):
        raise _fail(path, "num_classes", f"must be an integer >= 0 (0: no classifier); got {num_classes!r}.")

    input_size = raw.get("input_size")
    if input_size is not None:
        if (not isinstance(input_size, list) or len(input_size) != 3
                or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in input_size)
                or input_size[0] != 3):
            raise _fail(path, "input_size", f"must be [3, H, W] with positive integers; got {input_size!r}.")
        input_size = tuple(input_size)

    interp = raw.get("interpolation")
    if interp is not None and interp not in INTERPOLATIONS:
        raise _fail(path, "interpolation", f"must be one of {list(INTERPOLATIONS)}; got {interp!r}.")

    sc = raw.get("source_classes")
    sc_path = None
    if sc is not None:
        sc_path = resolve_card_path(path, sc, "source_classes", allow_outside=allow_outside_weights)

    name = raw.get("name")
    if not isinstance(name, str) or not name:
        name = path.parent.name if path.name == CARD_FILENAME else path.stem

    return Card(
        path=path, name=name, architecture=arch.strip(), model_kwargs=dict(kwargs), weights=weights_path,
        num_classes=num_classes, input_size=input_size, mean=_triple(path, raw, "mean"),
        std=_triple(path, raw, "std", positive=True), interpolation=interp, source_classes=sc_path,
        raw=raw,
    )


def read_class_names(card: Card) -> list[str] | None:
    if card.source_classes is None:
        return None
    try:
        lines = card.source_classes.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BackboneError(
            f"Backbone card {card.path}: source_classes file {card.source_classes} cannot be read: {exc}"
        ) from exc
    return [ln.strip() for ln in lines if ln.strip()]


def looks_like_card(path: Path) -> bool:
    """True for a JSON file that has an 'architecture' field (cheap check used when scanning folders)."""
    try:
        raw = read_json(path)
    except Exception:
        return False
    return isinstance(raw, dict) and "architecture" in raw
