"""``load_backbone``: one factory for timm names, local weight files, backbone cards, folders made
by ``transferkit pretrain``, and torchvision's AlexNet / GoogLeNet.

Building networks is in ``_architectures``, timm's hub weights in ``_timm_hub``, reading weight
files in ``_weights``; ``save_backbone_dir`` is in ``_saving`` and ``available_backbones`` in
``_available``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import BackboneError, ConfigError, WeightsNotFoundError
from ..io import sha256_file, sha256_json
from ._architectures import (
    arch_family,
    build_model,
    card_preprocessing,
    default_preprocessing,
    timm_classifier_name,
    timm_cut_modules,
    timm_default_classifier,
)
from ._backbone import Backbone
from ._cards import CARD_FILENAME, Card, read_card, read_class_names
from ._timm_extra import register_timm_extras
from ._timm_hub import LOCAL_WEIGHTS_FIX, imagenet_class_names, timm_pretrained
from ._torchvision import TORCHVISION_ARCHS, TorchvisionArch
from ._weights import (
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    classifier_out_features,
    load_into,
    read_state_dict,
)

_FILE_SUFFIXES = (".json",) + SAFETENSORS_SUFFIXES + TORCH_SUFFIXES + PICKLE_SUFFIXES


def _weights_hash(file_sha: str | None, arch: str, kwargs: dict[str, Any], seed: int) -> str:
    ident = {"architecture": arch, "model_kwargs": kwargs}
    if file_sha is None:
        return f"random-init-seed{seed}-{sha256_json(ident)[:16]}"
    return sha256_json({**ident, "weights_sha256": file_sha})


def _looks_like_path(spec: str | os.PathLike[str]) -> bool:
    if isinstance(spec, os.PathLike):
        return True
    s = str(spec)
    return ("/" in s or os.sep in s or s.lower().endswith(_FILE_SUFFIXES) or s.startswith((".", "~"))
            or Path(s).exists() and (Path(s).is_file() or (Path(s) / CARD_FILENAME).is_file()))


def load_backbone(spec: str | os.PathLike[str], *, pretrained: bool = True,
                  weights: str | os.PathLike[str] | None = None, allow_outside_weights: bool = False,
                  seed: int = 0) -> Backbone:
    """Build a Backbone from a timm name, a card JSON, a pretrain folder, or 'alexnet'/'googlenet'.

    ``pretrained=False``: random initialisation, seeded by ``seed`` (the scratch baseline); the
    card's preprocessing is still used. ``weights``: a local ``.safetensors`` / ``.pth`` file that
    replaces the card's (or timm's hub) weights.
    """
    register_timm_extras()
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer; got {seed!r}.")
    if weights is not None and not pretrained:
        raise ConfigError(
            f"weights={str(weights)!r} was given with pretrained=False; pass one or the other (random "
            "initialisation ignores weight files).")
    card: Card | None = None
    if _looks_like_path(spec):
        p = Path(os.path.expanduser(str(spec)))
        if p.is_dir():
            if not (p / CARD_FILENAME).is_file():
                raise BackboneError(
                    f"Folder {p} holds no {CARD_FILENAME}; a backbone folder (made by `transferkit "
                    "pretrain`) needs its card. Give a timm name, a card JSON, or such a folder.")
            card = read_card(p / CARD_FILENAME, allow_outside_weights=allow_outside_weights)
        elif p.is_file():
            if p.suffix.lower() != ".json":
                raise BackboneError(
                    f"{p} is a weights file, not a backbone spec. Name the architecture and pass the file "
                    f"as weights, e.g. load_backbone('resnet18', weights='{p}') (CLI: --backbone resnet18 "
                    "--weights FILE), or write a backbone card for it.")
            card = read_card(p, allow_outside_weights=allow_outside_weights)
        else:
            raise BackboneError(f"Backbone spec {str(spec)!r} looks like a path but does not exist.")

    arch = card.architecture if card else str(spec).strip()
    kwargs = dict(card.model_kwargs) if card else {}
    where = f"card {card.path}" if card else f"spec {arch!r}"
    family = arch_family(arch)
    tv: TorchvisionArch | None = TORCHVISION_ARCHS.get(arch)
    weights_file = card.weights if card else None
    if weights is not None:
        weights_file = Path(os.path.expanduser(str(weights)))

    source_classes: list[str] | None = None
    source_dataset: str | None = card.raw.get("source_dataset") if card else None
    if not pretrained:
        model = build_model(family, arch, 0, kwargs, seed, where)
        file_sha, weights_source, n_cls = None, "random-init", 0
    elif weights_file is not None:
        sd = read_state_dict(weights_file)
        clf = tv.classifier if tv else timm_default_classifier(arch)
        if card is not None and card.num_classes is not None and weights is None:
            n_cls = card.num_classes
        elif clf is not None:
            n_cls = classifier_out_features(sd, clf)
        else:  # unusual timm model without a registered classifier name: find it on a built copy
            probe = build_model(family, arch, 0, kwargs, seed, where)
            n_cls = classifier_out_features(sd, timm_classifier_name(probe))
        model = build_model(family, arch, n_cls, kwargs, seed, where)
        load_into(model, sd, source=str(weights_file), arch=arch,
                  ignore_prefixes=tv.ignore_keys if tv else ())
        file_sha, weights_source = sha256_file(weights_file), str(weights_file)
        if card is not None and n_cls:
            source_classes = read_class_names(card)
    elif card is not None:
        raise WeightsNotFoundError(
            f"Backbone card {card.path} names no weights file (field 'weights'); add one, pass "
            "weights=FILE (CLI: --weights FILE), or use pretrained=False for random initialisation.")
    elif tv is not None:
        ckpt = tv.hub_checkpoint()
        if not ckpt.is_file():
            raise WeightsNotFoundError(
                f"Pretrained weights for torchvision's {arch} are not on this machine (looked for {ckpt}, "
                f"torchvision's cache; download {tv.weights_enum().url} there when online). " + LOCAL_WEIGHTS_FIX)
        sd = read_state_dict(ckpt)
        n_cls = classifier_out_features(sd, tv.classifier)
        model = build_model(family, arch, n_cls, kwargs, seed, where)
        load_into(model, sd, source=str(ckpt), arch=arch, ignore_prefixes=tv.ignore_keys)
        file_sha, weights_source = sha256_file(ckpt), f"torchvision:{ckpt}"
        source_classes = tv.source_classes() if n_cls == 1000 else None
        source_dataset = "imagenet-1k"
    else:
        model, file_sha, weights_source = timm_pretrained(arch, kwargs)
        n_cls = int(getattr(model, "num_classes", 0) or 0)
        source_classes = imagenet_class_names(model) if n_cls else None
        source_dataset = "imagenet" if source_classes else None

    default_pp = default_preprocessing(family, model)
    preprocessing = card_preprocessing(card, default_pp) if card else default_pp
    reductions: dict[str, int] = {}
    if family == "timm":
        clf_name = timm_classifier_name(model)
        stem, stages = timm_cut_modules(model)
        reductions = {d["module"]: int(d["reduction"]) for d in model.feature_info}
    else:
        assert tv is not None
        clf_name, stem, stages = tv.classifier, tv.stem, list(tv.stages)

    backbone = Backbone(
        name=card.name if card else arch, arch=arch, spec=str(spec), family=family, model=model,
        model_kwargs=kwargs, pretrained=bool(pretrained),
        weights_hash=_weights_hash(file_sha, arch, kwargs, seed), weights_sha256=file_sha,
        weights_source=weights_source, preprocessing=preprocessing, source_classes=source_classes,
        num_classes=n_cls, classifier_name=clf_name, stem_module=stem, stage_modules=stages, seed=seed,
        source_dataset=source_dataset, known_reductions=reductions,
    )
    if card is not None and isinstance(card.raw.get("num_features"), int) and \
            card.raw["num_features"] != backbone.num_features:
        raise BackboneError(
            f"Backbone card {card.path} says num_features={card.raw['num_features']} but {arch} with "
            f"model_kwargs {kwargs} produces {backbone.num_features}; fix the card.")
    return backbone
