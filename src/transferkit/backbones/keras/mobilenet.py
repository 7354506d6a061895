"""Keras Applications MobileNet (v1) and MobileNetV2 are timm's MobileNet generators with TF "same"
padding (``pad_type='same'``: Keras pads strided convolutions asymmetrically, one row and column
at the bottom/right) and BatchNorm epsilon 1e-3. This module says which timm module takes which
Keras layer, and which timm name each Keras ``alpha`` is.
"""

from __future__ import annotations

import torch.nn as nn

from ...errors import BackboneError
from .layers import keras_tag

MODEL_KWARGS = {"pad_type": "same", "bn_eps": 0.001}
V1_NAMES = {0.25: "mobilenetv1_025", 0.5: "mobilenetv1_050", 0.75: "mobilenetv1_075", 1.0: "mobilenetv1_100"}
V2_NAMES = {0.35: "mobilenetv2_035", 0.5: "mobilenetv2_050", 0.75: "mobilenetv2_075", 1.0: "mobilenetv2_100",
            1.3: "mobilenetv2_130", 1.4: "mobilenetv2_140"}


def _blocks(model: nn.Module, expected: int, arch: str) -> list[nn.Module]:
    blocks = [b for stage in model.blocks for b in stage]
    if len(blocks) != expected:
        raise BackboneError(f"timm's {arch} has {len(blocks)} blocks; Keras's has {expected}.")
    return blocks


def tag_mobilenet_v1(model: nn.Module) -> None:
    """Keras names: conv1, conv_dw_k / conv_pw_k (k = 1..13, each with a ``_bn``), conv_preds."""
    keras_tag(model.conv_stem, "conv1", "conv")
    keras_tag(model.bn1, "conv1_bn", "bn")
    for k, block in enumerate(_blocks(model, 13, "MobileNet v1"), start=1):
        keras_tag(block.conv_dw, f"conv_dw_{k}", "depthwise")
        keras_tag(block.bn1, f"conv_dw_{k}_bn", "bn")
        keras_tag(block.conv_pw, f"conv_pw_{k}", "conv")
        keras_tag(block.bn2, f"conv_pw_{k}_bn", "bn")
    if model.num_classes:
        # Keras's classifier is a 1x1 Conv2D on the pooled 1x1 map: a Dense in PyTorch.
        keras_tag(model.classifier, "conv_preds", "conv1x1_dense")


def tag_mobilenet_v2(model: nn.Module) -> None:
    """Keras names: Conv1, expanded_conv_*, block_k_{expand,depthwise,project} (k = 1..16), Conv_1,
    predictions."""
    keras_tag(model.conv_stem, "Conv1", "conv")
    keras_tag(model.bn1, "bn_Conv1", "bn")
    first, *rest = _blocks(model, 17, "MobileNetV2")
    keras_tag(first.conv_dw, "expanded_conv_depthwise", "depthwise")
    keras_tag(first.bn1, "expanded_conv_depthwise_BN", "bn")
    keras_tag(first.conv_pw, "expanded_conv_project", "conv")
    keras_tag(first.bn2, "expanded_conv_project_BN", "bn")
    for k, block in enumerate(rest, start=1):
        keras_tag(block.conv_pw, f"block_{k}_expand", "conv")
        keras_tag(block.bn1, f"block_{k}_expand_BN", "bn")
        keras_tag(block.conv_dw, f"block_{k}_depthwise", "depthwise")
        keras_tag(block.bn2, f"block_{k}_depthwise_BN", "bn")
        keras_tag(block.conv_pwl, f"block_{k}_project", "conv")
        keras_tag(block.bn3, f"block_{k}_project_BN", "bn")
    keras_tag(model.conv_head, "Conv_1", "conv")
    keras_tag(model.bn2, "Conv_1_bn", "bn")
    if model.num_classes:
        keras_tag(model.classifier, "predictions", "dense")
