"""ONNX / TorchScript export of network and feature models match PyTorch within 1e-4 (fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferkit.errors import ConfigError


@pytest.fixture(scope="module")
def backbone():
    from transferkit.backbones import load_backbone
    from transferkit.backbones.smallcnn import register_smallcnn

    register_smallcnn()
    return load_backbone("tk_smallcnn", pretrained=False, seed=0)


@pytest.fixture(scope="module")
def network_model(backbone):
    from transferkit.strategies._network import NetworkModel

    torch.manual_seed(0)
    net = backbone.build_network(3, hidden=(8,), dropout=0.2)
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode export is really checked
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return NetworkModel(
        net=net, backbone=backbone, strategy="partial", classes=["a", "b", "c"], hidden=(8,), dropout=0.2, device="cpu"
    )


@pytest.fixture(scope="module")
def feature_model(backbone):
    from transferkit.backbones import build_head
    from transferkit.strategies._probe import FeatureModel

    torch.manual_seed(1)
    d = backbone.num_features
    return FeatureModel(
        backbone=backbone,
        strategy="hidden",
        layer="pool",
        pool="avg",
        classes=["a", "b", "c"],
        mean=np.full(d, 0.1, np.float32),
        scale=np.full(d, 2.0, np.float32),
        head=build_head(d, 3, (16,), 0.1).eval(),
        head_config={"in_features": d, "hidden": [16]},
    )


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_network_model_export_matches(network_model, tmp_path, fmt):
    from transferkit.export import export, run_exported

    res = export(network_model, fmt, tmp_path / f"m.{fmt}")
    assert res.path.is_file() and res.num_classes == 3  # (export raises when its own check exceeds 1e-4)
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32)).astype(np.float32)  # other batch size
    ref = network_model.to_module()(torch.from_numpy(x)).detach().numpy()
    assert np.abs(run_exported(res.path, fmt, x) - ref).max() <= 1e-4
    # probabilities of the fitted model agree with the exported logits
    proba = network_model.predict_proba(x.astype(np.uint8))
    got = torch.softmax(torch.from_numpy(run_exported(res.path, fmt, x.astype(np.uint8).astype(np.float32))), 1)
    assert np.abs(got.numpy() - proba).max() <= 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_feature_model_export_matches(feature_model, tmp_path, fmt):
    from transferkit.export import export, run_exported

    res = export(feature_model, fmt, tmp_path / f"f.{fmt}")
    assert res.path.is_file() and res.num_classes == 3  # (export raises when its own check exceeds 1e-4)
    # run the file independently: its softmax is the fitted model's predict_proba (other batch size)
    x = np.random.default_rng(1).integers(0, 256, (5, 3, 32, 32)).astype(np.uint8)
    proba = feature_model.predict_proba(x)
    got = torch.softmax(torch.from_numpy(run_exported(res.path, fmt, x.astype(np.float32))), 1).numpy()
    assert got.shape == (5, 3) and np.abs(got - proba).max() <= 1e-4


def test_export_errors(network_model, tmp_path):
    from transferkit.export import export

    with pytest.raises(ConfigError, match=r"'format' parameter must be one of"):
        export(network_model, "tflite", tmp_path / "x")
    with pytest.raises(ConfigError, match="does not implement to_module"):
        export(object(), "onnx", tmp_path / "x.onnx")
    # the export's own verification can fail: a tolerance no difference meets raises, the file is kept
    with pytest.raises(ConfigError, match=r"differs from the PyTorch model by .* \(> -1\.0\)"):
        export(network_model, "onnx", tmp_path / "y.onnx", tolerance=-1.0)
    assert (tmp_path / "y.onnx").is_file()
