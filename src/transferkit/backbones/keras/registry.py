"""Registers the Keras Applications twins with timm (``keras_vgg16``, ``keras_vgg19``,
``keras_resnet50``, ``keras_inception_v3``); called by ``register_timm_extras``."""

from __future__ import annotations


def register_keras_models() -> None:
    import timm
    from timm.models import register_model

    from . import inception, resnet, vgg

    for module in (vgg, resnet, inception):
        for entrypoint in module.ENTRYPOINTS:
            if not timm.list_models(entrypoint.__name__):
                register_model(entrypoint)
