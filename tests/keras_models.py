"""Keras Applications models with random weights, saved the ways users have them on disk.

Keras 3 runs on its PyTorch backend (no TensorFlow). Every variable is redrawn (kernels He-scaled,
biases and BatchNorm statistics away from their 0/1 defaults) so that a wrongly mapped bias, BatchNorm
statistic or channel order changes the outputs, and activations stay O(1), so an absolute tolerance
of 1e-4 means something.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"

from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

CONSTRUCTORS = {
    "vgg16": (keras.applications.VGG16, keras.applications.vgg16.preprocess_input, 224),
    "vgg19": (keras.applications.VGG19, keras.applications.vgg19.preprocess_input, 224),
    "resnet50": (keras.applications.ResNet50, keras.applications.resnet50.preprocess_input, 224),
    "inception_v3": (keras.applications.InceptionV3, keras.applications.inception_v3.preprocess_input, 299),
    "mobilenet": (keras.applications.MobileNet, keras.applications.mobilenet.preprocess_input, 224),
    "mobilenet_v2": (keras.applications.MobileNetV2, keras.applications.mobilenet_v2.preprocess_input, 224),
}
CAFFE = ("vgg16", "vgg19", "resnet50")


def build(arch: str, *, include_top: bool, alpha: float | None = None, seed: int = 0) -> keras.Model:
    """``arch`` as Keras Applications builds it (logits, no softmax; pooled features without the top)."""
    ctor, _, size = CONSTRUCTORS[arch]
    kwargs = {"alpha": alpha} if alpha is not None else {}
    top = {"classifier_activation": None} if include_top else {"pooling": "avg"}
    model = ctor(weights=None, include_top=include_top, input_shape=(size, size, 3), **top, **kwargs)
    randomize(model, seed, first_conv_scale=1 / 64 if arch in CAFFE else 1.0)
    return model


def randomize(model: keras.Model, seed: int, first_conv_scale: float = 1.0) -> None:
    rng = np.random.default_rng(seed)
    first = True
    for layer in model.layers:
        values = []
        for w in layer.weights:
            shape, name = tuple(w.shape), w.name
            if name == "kernel":
                fan_in = int(np.prod(shape[:-1])) if len(shape) != 4 or shape[-1] != 1 or \
                    not isinstance(layer, keras.layers.DepthwiseConv2D) else shape[0] * shape[1]
                v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
                if first and len(shape) == 4:
                    v, first = v * first_conv_scale, False
            elif name == "gamma":
                # ResNet's residual branches end in "_3_bn": a small scale there keeps 16 additions
                # from growing the activations into the thousands.
                v = rng.uniform(0.1, 0.3, shape) if layer.name.endswith("_3_bn") else rng.uniform(0.5, 1.5, shape)
            elif name == "moving_variance":
                v = rng.uniform(0.5, 2.0, shape)
            else:  # bias, beta, moving_mean
                v = rng.normal(0.0, 0.1, shape)
            values.append(v.astype("float32"))
        if values:
            layer.set_weights(values)


def save_keras3(model: keras.Model, path: Path) -> Path:
    """Keras 3 ``model.save_weights`` (``.weights.h5``)."""
    model.save_weights(str(path))
    return path


def save_keras2(model: keras.Model, path: Path, auto_name_offset: int = 1) -> Path:
    """The Keras 2 ``save_weights('x.h5')`` layout that ``~/.keras/models/*.h5`` downloads have:
    ``layer_names`` on the root, ``weight_names`` like ``block1_conv1/kernel:0`` per layer,
    ``depthwise_kernel`` for depthwise convolutions, and automatic names counted from 1
    (``conv2d_1``) as standalone Keras 2 did."""

    def keras2_name(name: str) -> str:
        for base in ("conv2d", "batch_normalization"):
            if name == base or name.startswith(base + "_") and name[len(base) + 1:].isdigit():
                n = int(name[len(base) + 1:] or 0)
                return f"{base}_{n + auto_name_offset}"
        return name

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [keras2_name(layer.name).encode() for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            lname = keras2_name(layer.name)
            group = f.create_group(lname)
            names = []
            for w in layer.weights:
                role = "depthwise_kernel" if isinstance(layer, keras.layers.DepthwiseConv2D) and w.name == "kernel" \
                    else w.name
                names.append(f"{lname}/{role}:0")
                group.create_dataset(names[-1], data=np.asarray(w.numpy()))
            group.attrs["weight_names"] = [n.encode() for n in names]
    return path


def save_legacy_model(model: keras.Model, path: Path) -> Path:
    """Keras 3 ``model.save('x.h5')``: the legacy layout under a ``model_weights`` group."""
    model.save(str(path))
    return path


def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, 3, size, size) uint8 images with smooth structure (a gradient plus noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([xx, yy, (xx + yy) / 2])[None] * 255
    noise = rng.uniform(-60, 60, (n, 3, size, size))
    return np.clip(base * rng.uniform(0.3, 1.0, (n, 3, 1, 1)) + noise, 0, 255).astype(np.uint8)


def keras_outputs(model: keras.Model, arch: str, x_uint8: np.ndarray) -> np.ndarray:
    """Keras's output on the same images: NCHW uint8 -> NHWC float, the arch's preprocess_input."""
    _, preprocess, _ = CONSTRUCTORS[arch]
    x = preprocess(np.ascontiguousarray(x_uint8.transpose(0, 2, 3, 1)).astype("float32"))
    return np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
