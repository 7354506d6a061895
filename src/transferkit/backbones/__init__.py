"""Backbones: pretrained CNNs with their preprocessing and named cut points.

``load_backbone(spec)`` builds one from a timm name, a backbone card, a folder made by
``transferkit pretrain``, or torchvision's ``alexnet`` / ``googlenet``.
"""

from ._available import CURATED_TIMM, available_backbones
from ._backbone import Backbone, CutPoint, Preprocessing, TransferNet, group_parameters
from ._cards import CARD_FILENAME, Card, read_card
from ._factory import load_backbone
from ._head import build_head
from ._saving import save_backbone_dir
from ._timm_extra import register_timm_extras
from ._torchvision import TORCHVISION_ARCHS

# Explicit, visible registration of transferkit's extra timm architectures (mobilenetv1_075), so
# `timm.create_model('mobilenetv1_075')` works once transferkit.backbones is imported. The factory
# calls it again (idempotent) before resolving any name.
register_timm_extras()

__all__ = [
    "CARD_FILENAME",
    "CURATED_TIMM",
    "TORCHVISION_ARCHS",
    "Backbone",
    "Card",
    "CutPoint",
    "Preprocessing",
    "TransferNet",
    "available_backbones",
    "build_head",
    "group_parameters",
    "load_backbone",
    "read_card",
    "register_timm_extras",
    "save_backbone_dir",
]
