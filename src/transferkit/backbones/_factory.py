"""``load_backbone``: one factory for timm names, local weight files, backbone cards, folders made
by ``transferkit pretrain``, and torchvision's AlexNet / GoogLeNet. Also ``save_backbone_dir`` and
``available_backbones``."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import BackboneError, ConfigError, WeightsNotFoundError
from ..io import atomic_path, atomic_write_json, atomic_write_text, sha256_file, sha256_json
from ._backbone import Backbone, Preprocessing, TransferNet
from ._cards import CARD_FILENAME, CARD_FORMAT, Card, looks_like_card, read_card, read_class_names
from ._timm_extra import EXTRA_TIMM_MODELS, register_timm_extras
from ._torchvision import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_ARCHS, TorchvisionArch
from ._weights import (
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIXES,
    TORCH_SUFFIXES,
    classifier_out_features,
    load_into,
    read_state_dict,
)

WEIGHTS_FILENAME = "weights.safetensors"
CLASSES_FILENAME = "source_classes.txt"

# Classic CNNs offered by `available_backbones` (any other timm name works with load_backbone too).
CURATED_TIMM = (
    "resnet18", "resnet50", "vgg16", "inception_v3", "mobilenetv2_035", "mobilenetv2_100",
    "mobilenetv3_large_100", "efficientnet_b0", "convnext_tiny",
)
_FILE_SUFFIXES = (".json",) + SAFETENSORS_SUFFIXES + TORCH_SUFFIXES + PICKLE_SUFFIXES

_FIX = ("Point transferkit at a local file instead: `--weights FILE` (Python: load_backbone(name, "
        "weights='FILE.safetensors')) or a backbone card JSON describing the architecture and its "
        "weights (see ../shared/weights/*.json for examples).")


# ------------------------------------------------------------------------------------------------
# architecture resolution and building
# ------------------------------------------------------------------------------------------------
def _known_names() -> list[str]:
    import timm

    return sorted(set(timm.list_models()) | set(TORCHVISION_ARCHS))


def _resolve_arch(arch: str) -> str:
    """Return the family ("timm" | "torchvision") of ``arch``; BackboneError with close matches if unknown."""
    import timm

    if arch in TORCHVISION_ARCHS:
        return "torchvision"
    if timm.is_model(arch):
        return "timm"
    close = difflib.get_close_matches(arch, _known_names(), n=6, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise BackboneError(
        f"Unknown architecture {arch!r}: not a timm model name nor one of transferkit's torchvision "
        f"wrappers ({', '.join(sorted(TORCHVISION_ARCHS))}).{hint} List them with "
        "`timm.list_models()` / `transferkit backbones`."
    )


def _timm_classifier_name(model: nn.Module) -> str:
    clf = model.get_classifier()
    for name, mod in model.named_modules():
        if mod is clf:
            return name
    raise BackboneError(f"Cannot locate the classifier module of {type(model).__name__}.")


def _timm_default_classifier(arch: str) -> str | None:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch, allow_unregistered=True)
    clf = getattr(cfg, "classifier", None) if cfg is not None else None
    return clf if isinstance(clf, str) else None


def _timm_cut_modules(model: nn.Module) -> tuple[str, list[str]]:
    """(stem module, stage modules) of a timm model from its feature_info.

    stem: the ``stem`` module when the model has one (ConvNeXt, RegNet, ...); ``bn1`` after
    ``conv_stem`` in the EfficientNet / MobileNet family; otherwise the first feature_info entry
    (ResNet ``act1``, VGG ``features.3``, Inception ``Conv2d_2b_3x3``), which is the stem output.
    stages: the (remaining) feature_info entries.
    """
    info = getattr(model, "feature_info", None)
    entries = [d["module"] for d in info] if isinstance(info, list) else []
    if not entries:
        raise BackboneError(
            f"timm model {type(model).__name__} has no feature_info; cannot name its cut points.")
    children = dict(model.named_children())
    if "stem" in children:
        stem = "stem"
    elif "conv_stem" in children and "bn1" in children:
        stem = "bn1"
    else:
        stem = entries[0]
    stages = [m for m in entries if m != stem]
    return stem, stages


def _build(family: str, arch: str, num_classes: int, kwargs: dict[str, Any], seed: int,
           where: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            if family == "torchvision":
                return TORCHVISION_ARCHS[arch].build(num_classes, **kwargs)
            import timm

            return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
        except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as exc:
            raise BackboneError(f"Cannot build {arch!r} with model_kwargs {kwargs} ({where}): {exc}") from exc


def _timm_preprocessing(model: nn.Module) -> Preprocessing:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return Preprocessing(tuple(int(v) for v in cfg["input_size"]), tuple(float(v) for v in cfg["mean"]),
                         tuple(float(v) for v in cfg["std"]), str(cfg.get("interpolation", "bilinear")))


def _default_preprocessing(family: str, model: nn.Module) -> Preprocessing:
    if family == "timm":
        return _timm_preprocessing(model)
    return Preprocessing((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, "bilinear")


def _card_preprocessing(card: Card, default: Preprocessing) -> Preprocessing:
    return Preprocessing(
        input_size=card.input_size or default.input_size,
        mean=card.mean or default.mean,
        std=card.std or default.std,
        interpolation=card.interpolation or default.interpolation,
    )


def _imagenet_names(model: nn.Module) -> list[str] | None:
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


def _hf_cache_dir() -> Path:
    """The Hugging Face hub cache timm downloads into (HF_HUB_CACHE / HF_HOME, as huggingface_hub sees them)."""
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
        return Path(os.environ.get("HF_HUB_CACHE") or Path(home) / "hub")


def _hf_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _timm_cached_file(arch: str) -> Path | None:
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
                hit = try_to_load_from_cache(repo, fn, cache_dir=str(_hf_cache_dir()), revision=rev or None)
                if isinstance(hit, str):
                    return Path(hit)
    url = getattr(cfg, "url", None)
    if url:
        ckpt = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        if ckpt.is_file():
            return ckpt
    return None


def _state_dict_hash(model: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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


# ------------------------------------------------------------------------------------------------
# the factory
# ------------------------------------------------------------------------------------------------
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
    family = _resolve_arch(arch)
    tv: TorchvisionArch | None = TORCHVISION_ARCHS.get(arch)
    weights_file = card.weights if card else None
    if weights is not None:
        weights_file = Path(os.path.expanduser(str(weights)))

    source_classes: list[str] | None = None
    source_dataset: str | None = card.raw.get("source_dataset") if card else None
    if not pretrained:
        model = _build(family, arch, 0, kwargs, seed, where)
        file_sha, weights_source, n_cls = None, "random-init", 0
    elif weights_file is not None:
        sd = read_state_dict(weights_file)
        clf = tv.classifier if tv else _timm_default_classifier(arch)
        if card is not None and card.num_classes is not None and weights is None:
            n_cls = card.num_classes
        elif clf is not None:
            n_cls = classifier_out_features(sd, clf)
        else:  # unusual timm model without a registered classifier name: find it on a built copy
            probe = _build(family, arch, 0, kwargs, seed, where)
            n_cls = classifier_out_features(sd, _timm_classifier_name(probe))
        model = _build(family, arch, n_cls, kwargs, seed, where)
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
                f"torchvision's cache; download {tv.weights_enum().url} there when online). " + _FIX)
        sd = read_state_dict(ckpt)
        n_cls = classifier_out_features(sd, tv.classifier)
        model = _build(family, arch, n_cls, kwargs, seed, where)
        load_into(model, sd, source=str(ckpt), arch=arch, ignore_prefixes=tv.ignore_keys)
        file_sha, weights_source = sha256_file(ckpt), f"torchvision:{ckpt}"
        source_classes = tv.source_classes() if n_cls == 1000 else None
        source_dataset = "imagenet-1k"
    else:
        model, file_sha, weights_source = _timm_pretrained(arch, kwargs)
        n_cls = int(getattr(model, "num_classes", 0) or 0)
        source_classes = _imagenet_names(model) if n_cls else None
        source_dataset = "imagenet" if source_classes else None

    default_pp = _default_preprocessing(family, model)
    preprocessing = _card_preprocessing(card, default_pp) if card else default_pp
    reductions: dict[str, int] = {}
    if family == "timm":
        clf_name = _timm_classifier_name(model)
        stem, stages = _timm_cut_modules(model)
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


def _timm_pretrained(arch: str, kwargs: dict[str, Any]) -> tuple[nn.Module, str, str]:
    """timm's normal pretrained path (HF hub cache, downloading when online)."""
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch, allow_unregistered=True)
    if cfg is None or not cfg.has_weights:
        extra = " (registered by transferkit; its weights come from a backbone card)" \
            if arch.split(".")[0] in EXTRA_TIMM_MODELS else ""
        raise WeightsNotFoundError(f"timm knows no pretrained weights for {arch!r}{extra}. " + _FIX)
    if not cfg.hf_hub_id and _hf_offline() and _timm_cached_file(arch) is None:
        # timm would fetch this URL-only checkpoint through torch.hub, which ignores HF_HUB_OFFLINE.
        raise WeightsNotFoundError(
            f"Pretrained weights for {arch!r} ({cfg.url}) are not in torch hub's cache "
            f"({Path(torch.hub.get_dir()) / 'checkpoints'}) and HF_HUB_OFFLINE is set. " + _FIX)
    try:
        model = timm.create_model(arch, pretrained=True, **kwargs)
    except Exception as exc:  # offline hub errors, missing cache entries, connection errors...
        source = cfg.hf_hub_id or cfg.url
        raise WeightsNotFoundError(
            f"Pretrained weights for {arch!r} are not on this machine and could not be downloaded "
            f"(timm source: {source}; HF cache: {_hf_cache_dir()}; error: {type(exc).__name__}: "
            f"{str(exc)[:200]}). " + _FIX) from exc
    cached = _timm_cached_file(arch)
    if cached is not None:
        return model, sha256_file(cached), f"timm:{cfg.hf_hub_id or cfg.url} ({cached})"
    return model, _state_dict_hash(model), f"timm:{cfg.hf_hub_id or cfg.url}"


# ------------------------------------------------------------------------------------------------
# saving a backbone transferkit made (pretrain output) so load_backbone can read it again
# ------------------------------------------------------------------------------------------------
def save_backbone_dir(net_or_model: TransferNet | Backbone | nn.Module, arch: str | None,
                      preprocessing: Preprocessing | None, out_dir: str | os.PathLike[str], *,
                      model_kwargs: dict[str, Any] | None = None, name: str | None = None,
                      source_classes: Sequence[str] | None = None, source_dataset: str | None = None,
                      include_head: bool = True, extra: dict[str, Any] | None = None) -> Path:
    """Write ``backbone.json`` (a card) + ``weights.safetensors`` into ``out_dir``, atomically.

    ``net_or_model``: a TransferNet (its body; with ``include_head`` and a plain Linear head, that head
    is stored as the classifier so the folder has a source head), a Backbone, or a timm/torchvision
    network of ``arch``. ``arch`` / ``preprocessing`` may be None for a TransferNet or Backbone.
    Returns the card path; ``load_backbone(out_dir)`` rebuilds the network.
    """
    from safetensors.torch import save_file

    from .. import __version__

    register_timm_extras()
    out = Path(out_dir)
    if isinstance(net_or_model, Backbone):
        bb = net_or_model
        arch, preprocessing = arch or bb.arch, preprocessing or bb.preprocessing
        model_kwargs = bb.model_kwargs if model_kwargs is None else model_kwargs
        model, clf_name = bb.model, bb.classifier_name
        n_cls = bb.num_classes
        state = dict(model.state_dict())
        if source_classes is None and bb.source_classes is not None:
            source_classes = bb.source_classes
    elif isinstance(net_or_model, TransferNet):
        net = net_or_model
        arch, preprocessing = arch or net.arch, preprocessing or net.preprocessing
        model_kwargs = net.model_kwargs if model_kwargs is None else model_kwargs
        clf_name = net.classifier_name
        state = {k: v for k, v in net.body.state_dict().items()
                 if not (k == clf_name or k.startswith(clf_name + "."))}
        n_cls = 0
        if include_head and isinstance(net.head, nn.Linear):
            state[f"{clf_name}.weight"] = net.head.weight
            state[f"{clf_name}.bias"] = net.head.bias
            n_cls = net.head.out_features
    elif isinstance(net_or_model, nn.Module):
        if arch is None or preprocessing is None:
            raise ConfigError("save_backbone_dir needs arch and preprocessing for a plain nn.Module.")
        model = net_or_model
        family = _resolve_arch(arch)
        clf_name = (TORCHVISION_ARCHS[arch].classifier if family == "torchvision"
                    else _timm_classifier_name(model))
        state = dict(model.state_dict())
        n_cls = classifier_out_features(state, clf_name)
    else:
        raise ConfigError(f"save_backbone_dir expects a TransferNet, Backbone or nn.Module; got "
                          f"{type(net_or_model).__name__}.")
    assert arch is not None and preprocessing is not None
    _resolve_arch(arch)
    if source_classes is not None and n_cls and len(source_classes) != n_cls:
        raise ConfigError(f"{len(source_classes)} source class names for a {n_cls}-class head.")

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    wpath = out / WEIGHTS_FILENAME
    with atomic_path(wpath, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "architecture": arch})
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "name": name or out.name,
        "architecture": arch,
        "model_kwargs": dict(model_kwargs or {}),
        "weights": WEIGHTS_FILENAME,
        "weights_sha256": sha256_file(wpath),
        "num_classes": int(n_cls),
        **preprocessing.to_dict(),
        "source_dataset": source_dataset,
        "source_classes": None,
        "transferkit_version": __version__,
    }
    if source_classes is not None and n_cls:
        atomic_write_text(out / CLASSES_FILENAME, "\n".join(map(str, source_classes)) + "\n")
        card["source_classes"] = CLASSES_FILENAME
    for k, v in (extra or {}).items():
        card.setdefault(k, v)
    cpath = out / CARD_FILENAME
    atomic_write_json(cpath, card)  # written last: a folder with a card is complete
    return cpath


# ------------------------------------------------------------------------------------------------
# what can be built here
# ------------------------------------------------------------------------------------------------
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
        f = _timm_cached_file(arch)
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
                family = _resolve_arch(card.architecture)
                ok = card.weights is not None and card.weights.is_file()
                row(card.name, spec, card.architecture, "card", family, card.weights if ok else None, ok, spec)
            except Exception as exc:  # one broken card must not hide the others
                row(c.stem, spec, None, "card", None, None, False, spec, error=str(exc))
    return rows
