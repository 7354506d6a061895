"""The two MobileNet cards in ../shared/weights were converted from Keras Applications weights by a
separate tool. Rebuilt as Keras models (the card's tensors put back into Keras's layout, checked by
Keras's own outputs on real images), saved in both formats and imported, they must come back
tensor for tensor, with the same card fields."""

from __future__ import annotations

import json

import keras_models as km
import numpy as np
import pytest
import torch
from conftest import MOBILENET_V1_CARD, MOBILENET_V2_CARD, SHARED
from PIL import Image
from safetensors.torch import load_file

from transferkit.backbones import load_backbone
from transferkit.backbones.keras import import_keras
from transferkit.backbones.keras.convert import layout_of

pytestmark = pytest.mark.shared

CASES = {  # card -> (arch, alpha, include_top)
    "v1": (MOBILENET_V1_CARD, "mobilenet", 0.75, True),
    "v2": (MOBILENET_V2_CARD, "mobilenet_v2", 0.35, False),
}
SAME_FIELDS = ("architecture", "model_kwargs", "num_classes", "num_features", "input_size", "interpolation",
               "mean", "std", "source_dataset")


def _to_keras(kind: str, role: str, t: torch.Tensor) -> np.ndarray:
    """A PyTorch tensor in the layout Keras stores it (the inverse of the importer's mapping)."""
    a = t.numpy()
    if role != "kernel":
        return a
    if kind == "conv":
        return a.transpose(2, 3, 1, 0)
    if kind == "depthwise":
        return a.transpose(2, 3, 0, 1)
    if kind == "conv1x1_dense":
        return a.T[None, None]
    return a.T


def keras_model_from_card(card_path, arch, alpha, top):
    """Keras ``arch`` holding the card's weights, placed by the card backbone's own Keras tags."""
    from transferkit.backbones.keras.importer import ARCHS

    model = km.build(arch, include_top=top, alpha=alpha)
    bb = load_backbone(card_path)
    ARCHS[arch].tag(bb.model)
    sd = bb.model.state_dict()
    roles = {"conv": ["weight"], "depthwise": ["weight"], "conv1x1_dense": ["weight", "bias"],
             "bn": ["weight", "bias", "running_mean", "running_var"]}
    keras_roles = {"weight": "kernel", "bias": "bias", "running_mean": "m", "running_var": "v"}
    for t in layout_of(bb.model):
        values = [_to_keras(t.kind, keras_roles[r] if t.kind != "bn" else r, sd[f"{t.module_path}.{r}"])
                  for r in roles[t.kind]]
        model.get_layer(t.keras_name).set_weights(values)
    return model, bb


def hymenoptera_images(n: int = 6) -> np.ndarray:
    files = sorted((SHARED / "data" / "hymenoptera" / "val" / "ants").glob("*.jpg"))[:n]
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR)).transpose(2, 0, 1)
                     for f in files])


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_importing_the_keras_layout_reproduces_the_shared_card(which, tmp_path):
    card_path, arch, alpha, top = CASES[which]
    model, bb = keras_model_from_card(card_path, arch, alpha, top)
    # The Keras model computes what the shared card computes: the layout above is the card's Keras model.
    x = hymenoptera_images()
    ref = km.keras_outputs(model, arch, x)
    got = (bb.source_logits if top else lambda t: bb.forward_layers(t, ["pool"])["pool"])(torch.from_numpy(x))
    assert float(np.abs(got.numpy() - ref).max()) < 1e-4

    shared = load_file(str(card_path.with_suffix(".safetensors")))
    shared_card = json.loads(card_path.read_text())
    for fmt, save, filename in (("keras3", km.save_keras3, "m.weights.h5"), ("keras2", km.save_keras2, "m.h5")):
        out = tmp_path / fmt
        import_keras(save(model, tmp_path / filename), arch, out, alpha=alpha, include_top=top)
        mine = load_file(str(out / "weights.safetensors"))
        assert sorted(mine) == sorted(shared), fmt
        different = [k for k in shared if not torch.equal(mine[k], shared[k])]
        assert not different, (fmt, different[:5])
        card = json.loads((out / "backbone.json").read_text())
        assert {k: card[k] for k in SAME_FIELDS} == {k: shared_card[k] for k in SAME_FIELDS}, fmt
