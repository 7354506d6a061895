"""``import-keras``: Keras Applications weights (Keras 2 .h5, Keras 3 .weights.h5 / model.save .h5)
become backbones whose outputs match Keras's own (Keras 3, PyTorch backend) within 1e-4; files that
do not fit the named architecture are refused, naming the tensors."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import keras_models as km
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from transferkit.backbones import load_backbone
from transferkit.backbones.keras import import_keras
from transferkit.cli import app
from transferkit.errors import BackboneError, ConfigError

TOL = 1e-4
FORMATS = {"keras3": (km.save_keras3, "m.weights.h5"), "keras2": (km.save_keras2, "m.h5"),
           "keras3_model_h5": (km.save_legacy_model, "full.h5")}
# (arch, include_top, alpha): the default suite covers every family; the rest (VGG with its
# 500 MB top, the other top settings) are slow.
FAST = [("mobilenet", True, 0.75), ("mobilenet_v2", False, 0.35), ("resnet50", True, None),
        ("inception_v3", False, None), ("vgg16", False, None)]
SLOW = [("vgg16", True, None), ("vgg19", True, None), ("vgg19", False, None), ("inception_v3", True, None),
        ("resnet50", False, None), ("mobilenet", False, 1.0), ("mobilenet_v2", True, 1.0)]
CLASSIFIER = {"mobilenet": "conv_preds"}


def _keras_reference(model, arch: str, top: bool, x: np.ndarray) -> dict[str, np.ndarray]:
    """Keras's logits (top) and pooled features (with the top: the classifier's input)."""
    import keras

    out = {"logits" if top else "pool": km.keras_outputs(model, arch, x)}
    if top:
        pooled = keras.Model(model.inputs, model.get_layer(CLASSIFIER.get(arch, "predictions")).input)
        out["pool"] = km.keras_outputs(pooled, arch, x).reshape(len(x), -1)
    return out


def check_matches_keras(arch: str, top: bool, alpha: float | None, tmp_path: Path) -> dict[str, float]:
    model = km.build(arch, include_top=top, alpha=alpha)
    size = km.CONSTRUCTORS[arch][2]
    x = km.images(2, size)
    ref = _keras_reference(model, arch, top, x)
    assert all(float(v.std()) > 0.05 for v in ref.values()), "outputs too small for a 1e-4 check to mean anything"
    diffs = {}
    for fmt, (save, filename) in FORMATS.items():
        path = save(model, tmp_path / filename)
        out = tmp_path / f"{arch}-{fmt}"
        import_keras(path, arch, out, alpha=alpha, include_top=top)
        bb = load_backbone(out)
        xt = torch.from_numpy(x)
        got = {"pool": bb.forward_layers(xt, ["pool"])["pool"].numpy()}
        if top:
            got["logits"] = bb.source_logits(xt).numpy()
        for k, v in ref.items():
            assert got[k].shape == v.shape, (fmt, k)
            diffs[f"{fmt}/{k}"] = float(np.abs(got[k] - v).max())
        card = json.loads((out / "backbone.json").read_text())
        assert card["keras_source"]["format"] == ("keras3-weights-h5" if fmt == "keras3" else "keras2-legacy-h5")
    print(f"\n{arch} top={top} alpha={alpha} max abs diff: {diffs}")
    assert max(diffs.values()) <= TOL, diffs
    return diffs


@pytest.mark.parametrize(("arch", "top", "alpha"), FAST, ids=[f"{a}-{'top' if t else 'notop'}" for a, t, _ in FAST])
def test_imported_backbone_matches_keras(arch, top, alpha, tmp_path, one_torch_thread):
    check_matches_keras(arch, top, alpha, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "top", "alpha"), SLOW, ids=[f"{a}-{'top' if t else 'notop'}" for a, t, _ in SLOW])
def test_imported_backbone_matches_keras_slow(arch, top, alpha, tmp_path):
    check_matches_keras(arch, top, alpha, tmp_path)


# ------------------------------------------------------------------ the imported folder as a backbone
@pytest.fixture(scope="module")
def small_keras_file(tmp_path_factory) -> Path:
    """A Keras 3 MobileNetV2 (alpha 0.35) with its 1000-class top, random weights."""
    model = km.build("mobilenet_v2", include_top=True, alpha=0.35)
    return km.save_keras3(model, tmp_path_factory.mktemp("k") / "mnv2.weights.h5")


def test_card_fields_cut_points_and_cli(small_keras_file, tmp_path):
    out = tmp_path / "mnv2"
    result = CliRunner().invoke(app, ["import-keras", str(small_keras_file), "--arch", "mobilenet_v2",
                                      "--alpha", "0.35", "--include-top", "--out", str(out), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["layers"] == ["stem", "stage1", "stage2", "stage3", "stage4", "stage5", "pool"]
    card = json.loads((out / "backbone.json").read_text())
    assert card["architecture"] == "mobilenetv2_035"
    assert card["model_kwargs"] == {"pad_type": "same", "bn_eps": 0.001}
    assert (card["num_classes"], card["num_features"], card["input_size"]) == (1000, 1280, [3, 224, 224])
    assert (card["mean"], card["std"], card["keras_preprocessing"]) == ([0.5] * 3, [0.5] * 3, "tf")
    assert len((out / card["source_classes"]).read_text().splitlines()) == 1000
    assert load_backbone(out).has_source_head


@pytest.mark.parametrize("arch", ["keras_vgg16", "keras_resnet50", "keras_inception_v3"])
def test_keras_twins_have_named_cut_points(arch):
    bb = load_backbone(arch, pretrained=False)
    assert bb.layer_names == ["stem", "stage1", "stage2", "stage3", "stage4", "pool"]
    assert [cp.reduction for cp in bb.cut_points] == [2, 4, 8, 16, 32, 32]
    assert [name for name, _ in bb.param_groups()] == ["stem", "stage1", "stage2", "stage3", "stage4", "top"]


def test_caffe_card_reverses_the_first_convolution_to_rgb(tmp_path):
    """VGG/ResNet weights expect BGR: the card keeps RGB input, with the mean in RGB order."""
    model = km.build("vgg16", include_top=False)
    path = km.save_keras3(model, tmp_path / "vgg.weights.h5")
    import_keras(path, "vgg16", tmp_path / "vgg")
    card = json.loads((tmp_path / "vgg" / "backbone.json").read_text())
    assert card["keras_preprocessing"] == "caffe"
    assert card["mean"] == pytest.approx([123.68 / 255, 116.779 / 255, 103.939 / 255])
    keras_kernel = model.get_layer("block1_conv1").weights[0].numpy()  # (3, 3, in BGR, out)
    torch_kernel = load_backbone(tmp_path / "vgg").model.stem.block1_conv1.weight.detach().numpy()
    np.testing.assert_array_equal(torch_kernel[:, 0], keras_kernel[:, :, 2].transpose(2, 0, 1))  # R = Keras's 3rd


def test_fit_on_an_imported_backbone(small_keras_file, tiny_folder, tmp_path):
    from transferkit import TransferClassifier

    import_keras(small_keras_file, "mobilenet_v2", tmp_path / "bb", alpha=0.35)
    clf = TransferClassifier(backbone=str(tmp_path / "bb"), strategy="linear", cache_dir=tmp_path / "cache",
                             progress=False)
    clf.fit(str(tiny_folder), run_dir=tmp_path / "run")
    assert clf.metrics_["n"] == 18


# ------------------------------------------------------------------ refusals
def test_other_architecture_is_refused_naming_tensors(small_keras_file, tmp_path):
    with pytest.raises(BackboneError) as err:
        import_keras(small_keras_file, "mobilenet", tmp_path / "x", alpha=0.75)
    msg = str(err.value)
    assert "missing from the file: conv1 (kernel), conv1_bn (gamma, beta, moving_mean, moving_variance)" in msg
    assert "unexpected in the file: " in msg and "bn_Conv1" in msg
    assert "--arch mobilenet --alpha 0.75" in msg
    assert not (tmp_path / "x" / "backbone.json").exists()


def test_wrong_width_is_refused_naming_shapes(small_keras_file, tmp_path):
    with pytest.raises(BackboneError, match=r"other tensors or shapes: Conv1/kernel: file \(3, 3, 3, 16\) vs "
                       r"mobilenet_v2 \(3, 3, 3, 32\)") as err:
        import_keras(small_keras_file, "mobilenet_v2", tmp_path / "x", alpha=1.0)
    assert "with this alpha" in str(err.value)


def test_missing_layer_in_a_keras2_file_is_named(tmp_path):
    path = km.save_keras2(km.build("mobilenet_v2", include_top=False, alpha=0.35), tmp_path / "m.h5")
    with h5py.File(path, "r+") as f:
        del f["block_3_project_BN"]
    with pytest.raises(BackboneError, match=r"1 layer\(s\) missing from the file: block_3_project_BN \(gamma"):
        import_keras(path, "mobilenet_v2", tmp_path / "x", alpha=0.35)


def test_include_top_on_a_file_without_top(tmp_path):
    path = km.save_keras3(km.build("mobilenet_v2", include_top=False, alpha=0.35), tmp_path / "m.weights.h5")
    with pytest.raises(BackboneError, match="no classifier layer 'predictions'.*include_top=False"):
        import_keras(path, "mobilenet_v2", tmp_path / "x", alpha=0.35, include_top=True)


def test_not_hdf5_is_refused_without_unpickling(tmp_path):
    import pickle

    bad = tmp_path / "weights.h5"
    bad.write_bytes(pickle.dumps({"kernel": [1, 2, 3]}))
    with pytest.raises(BackboneError, match="is not an HDF5 file"):
        import_keras(bad, "vgg16", tmp_path / "x")


def test_bad_arch_and_alpha(small_keras_file, tmp_path):
    with pytest.raises(ConfigError, match="--arch must be one of vgg16, vgg19, resnet50"):
        import_keras(small_keras_file, "resnet18", tmp_path / "x")
    with pytest.raises(ConfigError, match="alpha must be one of"):
        import_keras(small_keras_file, "mobilenet_v2", tmp_path / "x", alpha=0.6)
    with pytest.raises(ConfigError, match="--alpha is for mobilenet"):
        import_keras(small_keras_file, "vgg16", tmp_path / "x", alpha=0.5)
    result = CliRunner().invoke(app, ["import-keras", str(small_keras_file), "--arch", "mobilenet",
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "does not fit Keras mobilenet" in result.output
