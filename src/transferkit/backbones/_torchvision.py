"""torchvision's AlexNet and GoogLeNet behind the same interface as timm models.

timm has neither. Their cut points are named here by hand, as module paths of the torchvision
network (the names its state dicts use), so no calling code ever cuts by positional index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TorchvisionArch:
    name: str
    classifier: str  # module path of the final Linear (the source head)
    stem: str  # module whose output is the "stem" cut point
    stages: tuple[str, ...]  # modules whose outputs are "stage1".."stageN"
    ignore_keys: tuple[str, ...] = ()  # state-dict prefixes of parts we never build
    defaults: tuple[tuple[str, Any], ...] = ()  # constructor kwargs we always pass

    def build(self, num_classes: int, **kwargs: Any) -> nn.Module:
        import torchvision.models as tvm

        builder = getattr(tvm, self.name)
        # num_classes == 0 means "no classifier": build the default head, then drop it.
        model = builder(weights=None, num_classes=num_classes or 1000, **{**dict(self.defaults), **kwargs})
        if num_classes == 0:
            model.set_submodule(self.classifier, nn.Identity())
        return model

    def weights_enum(self) -> Any:
        import torchvision.models as tvm

        return {"alexnet": tvm.AlexNet_Weights, "googlenet": tvm.GoogLeNet_Weights}[self.name].IMAGENET1K_V1

    def hub_checkpoint(self) -> Path:
        """Where torchvision keeps its pretrained file once downloaded (torch hub checkpoints dir)."""
        import torch.hub

        url = self.weights_enum().url
        return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]

    def source_classes(self) -> list[str]:
        return list(self.weights_enum().meta["categories"])


TORCHVISION_ARCHS: dict[str, TorchvisionArch] = {
    # AlexNet features: conv1 relu1 pool1 | conv2 relu2 pool2 | conv3 relu3 | conv4 relu4 | conv5 relu5
    # pool5; classifier: drop fc6 relu6 drop fc7 relu7 fc8. "pool" = input of fc8 (fc7 codes, 4096).
    "alexnet": TorchvisionArch(
        name="alexnet",
        classifier="classifier.6",
        stem="features.1",  # relu1: conv1 output, 64 ch, stride 4
        stages=(
            "features.4",  # relu2 (after pool1 + conv2), 192 ch, stride 8
            "features.7",  # relu3, 384 ch, stride 16
            "features.9",  # relu4, 256 ch, stride 16
            "features.12",  # pool5 (after conv5 + relu5), 256 ch, stride 32
        ),
    ),
    # GoogLeNet: conv1 pool1 conv2 conv3 pool2 | 3a 3b | pool3 4a..4e | pool4 5a 5b | avgpool fc.
    # Each BasicConv2d applies its ReLU inside, so module outputs are post-activation.
    "googlenet": TorchvisionArch(
        name="googlenet",
        classifier="fc",
        stem="conv3",  # 192 ch, stride 4
        stages=("inception3b", "inception4e", "inception5b"),  # 480 / 832 / 1024 ch, stride 8 / 16 / 32
        ignore_keys=("aux1.", "aux2."),  # torchvision's file holds the auxiliary heads; we build none
        defaults=(("aux_logits", False), ("transform_input", False), ("init_weights", True)),
    ),
}
