"""Keras Applications weights as transferkit backbones (``transferkit import-keras``).

``h5`` reads Keras 2 / Keras 3 weight files with h5py; ``vgg``, ``resnet``, ``inception`` are the
PyTorch twins of Keras's VGG16/19, ResNet50 (v1) and InceptionV3 (registered with timm by
``registry``); ``mobilenet`` maps Keras's MobileNets onto timm's; ``convert`` turns Keras tensors
into a state dict; ``importer`` writes the backbone card.
"""

from .h5 import KerasWeights, read_keras_weights
from .importer import ARCHS, PREPROCESSING, import_keras

__all__ = ["ARCHS", "PREPROCESSING", "KerasWeights", "import_keras", "read_keras_weights"]
