"""``import_keras``: a Keras Applications weights file -> a transferkit backbone card + safetensors.

The file is read with h5py (``h5``), mapped by Keras layer name onto the PyTorch twin of the
architecture (``convert``), loaded strictly, and written with ``save_backbone_dir`` (atomic writes,
card last), so the folder is a ``--backbone DIR`` for every command.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from ...errors import BackboneError, ConfigError
from ...io import sha256_file
from .._architectures import build_model
from .._backbone import Preprocessing
from .._saving import save_backbone_dir
from .._timm_extra import register_timm_extras
from .._weights import load_into
from . import inception, mobilenet
from .convert import keras_to_state_dict
from .h5 import KerasWeights, read_keras_weights

# Keras's preprocess_input modes as (x/255 - mean) / std in RGB order. "caffe" is BGR with the
# ImageNet channel means (0..255) subtracted and no scaling: the mean here is in RGB order and the
# first convolution's input channels are reversed at import, so the network takes RGB.
PREPROCESSING: dict[str, dict[str, tuple[float, float, float]]] = {
    "caffe": {"mean": (123.68 / 255, 116.779 / 255, 103.939 / 255), "std": (1 / 255, 1 / 255, 1 / 255)},
    "tf": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},  # x / 127.5 - 1
}


@dataclass(frozen=True)
class KerasArch:
    """What transferkit knows about one ``--arch``."""

    keras_call: str  # the Keras Applications constructor
    timm_names: Mapping[float | None, str]  # alpha (None: no alpha) -> registered timm name
    preprocessing: str
    input_size: int
    classifier: str  # Keras name of the 1000-class layer
    top: tuple[str, ...]  # Keras layers only include_top=True has (classifier included)
    tag: Callable[[nn.Module], None] | None = None  # for timm's own networks (MobileNets)
    rename: Callable[[list[str]], Mapping[str, str]] | None = None
    bgr_first_conv: str | None = None
    top_kwargs: Mapping[str, Any] = field(default_factory=dict)  # model_kwargs that build the top
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)


ARCHS: dict[str, KerasArch] = {
    "vgg16": KerasArch("keras.applications.VGG16", {None: "keras_vgg16"}, "caffe", 224, "predictions",
                       ("fc1", "fc2", "predictions"), bgr_first_conv="block1_conv1",
                       top_kwargs={"fc_layers": True}),
    "vgg19": KerasArch("keras.applications.VGG19", {None: "keras_vgg19"}, "caffe", 224, "predictions",
                       ("fc1", "fc2", "predictions"), bgr_first_conv="block1_conv1",
                       top_kwargs={"fc_layers": True}),
    "resnet50": KerasArch("keras.applications.ResNet50", {None: "keras_resnet50"}, "caffe", 224,
                          "predictions", ("predictions",), bgr_first_conv="conv1_conv"),
    "inception_v3": KerasArch("keras.applications.InceptionV3", {None: "keras_inception_v3"}, "tf", 299,
                              "predictions", ("predictions",), rename=inception.canonical_names),
    "mobilenet": KerasArch("keras.applications.MobileNet", mobilenet.V1_NAMES, "tf", 224, "conv_preds",
                           ("conv_preds",), tag=mobilenet.tag_mobilenet_v1, model_kwargs=mobilenet.MODEL_KWARGS),
    "mobilenet_v2": KerasArch("keras.applications.MobileNetV2", mobilenet.V2_NAMES, "tf", 224, "predictions",
                              ("predictions",), tag=mobilenet.tag_mobilenet_v2, model_kwargs=mobilenet.MODEL_KWARGS),
}


def _timm_name(arch: str, spec: KerasArch, alpha: float | None) -> str:
    if None in spec.timm_names:
        if alpha is not None:
            raise ConfigError(f"--alpha is for mobilenet and mobilenet_v2 only; {arch} has one width.")
        return spec.timm_names[None]
    alpha = 1.0 if alpha is None else float(alpha)
    if alpha not in spec.timm_names:
        raise ConfigError(f"Keras {arch} with alpha={alpha} is not supported; alpha must be one of "
                          f"{sorted(spec.timm_names)} (the widths Keras Applications has weights for).")
    return spec.timm_names[alpha]


def _num_classes(weights: KerasWeights, spec: KerasArch, arch: str) -> int:
    layer = weights.layers.get(spec.classifier)
    if layer is None:
        raise BackboneError(
            f"{weights.path} has no classifier layer {spec.classifier!r}: it was saved without the top "
            f"({spec.keras_call}(include_top=False)) or is not a Keras {arch}. Import it without "
            "--include-top (the features are the same).")
    kernel = layer.arrays[layer.roles.index("kernel")] if layer.roles and "kernel" in layer.roles else layer.arrays[0]
    return int(kernel.shape[-1])


def import_keras(file: str | os.PathLike[str], arch: str, out_dir: str | os.PathLike[str], *,
                 alpha: float | None = None, include_top: bool = False, name: str | None = None,
                 source_dataset: str | None = "imagenet-1k") -> Path:
    """Convert Keras ``arch`` weights in ``file`` (.h5, .weights.h5 or .keras) into a backbone folder.

    ``include_top`` keeps the classifier (1000 ImageNet classes for Keras Applications weights; the
    advisor's similarity signal uses it) and, for VGG, ``fc1``/``fc2``, whose output then is the
    pooled features. Returns the card path; ``load_backbone(out_dir)`` builds the backbone.
    """
    if arch not in ARCHS:
        raise ConfigError(f"--arch must be one of {', '.join(ARCHS)}; got {arch!r}.")
    spec = ARCHS[arch]
    timm_name = _timm_name(arch, spec, alpha)
    weights = read_keras_weights(file)
    n_cls = _num_classes(weights, spec, arch) if include_top else 0
    kwargs = {**spec.model_kwargs, **(spec.top_kwargs if include_top else {})}
    register_timm_extras()
    model = build_model("timm", timm_name, n_cls, kwargs, seed=0, where=f"import-keras {arch}")
    if spec.tag is not None:
        spec.tag(model)
    alpha_flag = f" --alpha {alpha}" if alpha is not None else ""
    fix = (f"Check that {weights.path.name} was saved by {spec.keras_call}"
           f"{' with this alpha' if alpha is not None else ''} (--arch {arch}{alpha_flag}); "
           "a model built on top of it must be saved on its own (base_model.save_weights(...)).")
    state = keras_to_state_dict(weights, model, arch=arch, fix=fix, rename=spec.rename,
                                ignore=() if include_top else spec.top, bgr_first_conv=spec.bgr_first_conv)
    load_into(model, state, source=str(weights.path), arch=timm_name)
    pp = PREPROCESSING[spec.preprocessing]
    preprocessing = Preprocessing((3, spec.input_size, spec.input_size), pp["mean"], pp["std"], "bilinear")
    classes = _imagenet_classes() if n_cls == 1000 and source_dataset == "imagenet-1k" else None
    dropped = [n for n in spec.top if n in weights.layers] if not include_top else []
    extra = {
        "num_features": int(model.num_features),
        "keras_preprocessing": spec.preprocessing,
        "keras_source": {"file": weights.path.name, "sha256": sha256_file(weights.path), "format": weights.format,
                         "arch": arch, "alpha": alpha, "include_top": include_top, "dropped_layers": dropped},
        "note": (f"Imported from {spec.keras_call} weights by `transferkit import-keras`. Keras "
                 f"preprocessing '{spec.preprocessing}' is written as mean/std in RGB order"
                 + ("; the first convolution's input channels were reversed from Keras's BGR to RGB."
                    if spec.bgr_first_conv else ".")),
    }
    return save_backbone_dir(model, timm_name, preprocessing, out_dir, model_kwargs=kwargs,
                             name=name or Path(out_dir).name, source_classes=classes,
                             source_dataset=source_dataset, extra=extra)


def _imagenet_classes() -> list[str] | None:
    """ImageNet-1k class names in index order (Keras Applications use the same order)."""
    try:
        from timm.data import ImageNetInfo

        return list(ImageNetInfo("imagenet-1k").label_descriptions())
    except Exception:  # an older timm without the class tables: the card simply has no names
        return None
