"""transferkit.runtime: the one device / precision resolver (the module docstring's table) and CacheLayout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit import runtime
from transferkit.engine import TrainConfig
from transferkit.errors import ConfigError
from transferkit.runtime import (
    CacheLayout,
    canonical_precision,
    lightning_precision,
    resolve_device,
    resolve_precision,
    training_precision,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


# ------------------------------------------------------------------------------- precision
def test_auto_on_the_cpu_is_fp32_for_extraction():
    # bf16 moved the flowers5 linear probe by -0.36 points (> 0.3 allowed): never chosen for features.
    assert resolve_precision("auto", CPU, "extract") == "fp32"
    assert resolve_precision("auto", "cpu") == "fp32"  # extraction is the default purpose


@pytest.mark.parametrize("onednn_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_the_cpu_for_training_follows_onednn(monkeypatch, onednn_bf16, expected):
    monkeypatch.setattr(runtime, "_cpu_trains_bf16", lambda: onednn_bf16)
    assert resolve_precision("auto", CPU, "train") == expected
    assert training_precision("auto", "cpu") == {"bf16": "bf16-mixed", "fp32": "32-true"}[expected]
    assert resolve_precision("auto", CPU, "extract") == "fp32"  # whatever the CPU can do


def test_auto_for_training_on_this_cpu_is_what_onednn_says():
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    assert resolve_precision("auto", CPU, "train") == ("bf16" if native else "fp32")


@pytest.mark.parametrize("purpose", ["extract", "train"])
@pytest.mark.parametrize("bf16_gpu, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_else_fp16_for_both_purposes(monkeypatch, purpose, bf16_gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    assert resolve_precision("auto", CUDA, purpose) == expected


@pytest.mark.parametrize("purpose", ["extract", "train"])
def test_explicit_precisions_and_their_lightning_names(purpose):
    for ours, lightning in (("fp32", "32-true"), ("bf16", "bf16-mixed")):
        assert resolve_precision(ours, CPU, purpose) == ours
        assert resolve_precision(lightning, CPU, purpose) == ours
    assert resolve_precision("fp16", CUDA, purpose) == "fp16"
    assert resolve_precision("16-mixed", CUDA, purpose) == "fp16"


@pytest.mark.parametrize("purpose", ["extract", "train"])
@pytest.mark.parametrize("precision", ["fp16", "16-mixed"])
def test_fp16_on_the_cpu_is_refused(purpose, precision):
    with pytest.raises(ConfigError, match="only supported on CUDA"):
        resolve_precision(precision, CPU, purpose)


def test_unknown_precision_and_purpose_are_refused():
    for bad in ("half", "fp8", "", None, 16):
        with pytest.raises(ConfigError, match="'precision' parameter must be one of"):
            resolve_precision(bad, CPU)
    with pytest.raises(ValueError, match="purpose"):
        resolve_precision("auto", CPU, "predict")


def test_one_map_to_lightning_names():
    assert [lightning_precision(p) for p in runtime.PRECISIONS] == ["auto", "32-true", "bf16-mixed", "16-mixed"]
    assert [canonical_precision(p) for p in ("32-true", "bf16-mixed", "16-mixed", "auto")] == [
        "fp32", "bf16", "fp16", "auto"]
    assert lightning_precision("bf16-mixed") == "bf16-mixed"


def test_train_config_accepts_both_vocabularies_and_stores_lightning_names():
    # Checkpoints and run directories store the Lightning names; a resume compares them field by field.
    for given, stored in (("auto", "auto"), ("fp32", "32-true"), ("32-true", "32-true"), ("bf16", "bf16-mixed"),
                          ("bf16-mixed", "bf16-mixed"), ("fp16", "16-mixed"), ("16-mixed", "16-mixed")):
        assert TrainConfig(precision=given).precision == stored
    with pytest.raises(ConfigError, match="'precision' parameter"):
        TrainConfig(precision="fp8")


# ---------------------------------------------------------------------------------- device
def test_resolve_device_names():
    assert resolve_device("cpu") == CPU
    assert resolve_device(" CPU ") == CPU
    assert resolve_device(torch.device("cpu")) == CPU
    assert resolve_device("auto") == (CUDA if torch.cuda.is_available() else CPU)
    for bad in ("tpu", "gpu", "", 0, None):
        with pytest.raises(ConfigError, match="'device' parameter must be"):
            resolve_device(bad)


def test_a_missing_cuda_device_is_refused_everywhere(monkeypatch):
    from transferkit.engine import make_fabric, predict_logits

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    for name in ("cuda", "cuda:0", "cuda:1"):
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device(name)
    # The training loop and prediction use the same resolver (no silent fallback, no torch error).
    with pytest.raises(ConfigError, match="CUDA is not available"):
        make_fabric("cuda", "fp32")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        predict_logits(torch.nn.Identity(), np.zeros((1, 3, 4, 4), np.uint8), device="cuda")


def test_a_cuda_index_beyond_the_machine_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match=r"has 1 CUDA device\(s\)"):
        resolve_device("cuda:1")


# ------------------------------------------------------------------------------ CacheLayout
def test_cache_layout_paths(tmp_path, monkeypatch):
    layout = CacheLayout(tmp_path)
    assert (layout.features, layout.decoded, layout.runs) == (tmp_path / "features", tmp_path / "decoded",
                                                               tmp_path / "runs")
    assert CacheLayout(str(tmp_path)) == layout and isinstance(CacheLayout(str(tmp_path)).root, Path)
    assert CacheLayout.from_store_dir(layout.features) == layout
    assert CacheLayout.from_store_dir(tmp_path / "elsewhere").decoded == tmp_path / "decoded"
    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path / "env"))
    assert CacheLayout.default().root == tmp_path / "env"
    monkeypatch.delenv("TRANSFERKIT_CACHE")
    assert CacheLayout.default().root == Path.home() / ".cache" / "transferkit"


def test_api_default_cache_dir_is_the_layout_root(tmp_path, monkeypatch):
    from transferkit.api import default_cache_dir

    monkeypatch.setenv("TRANSFERKIT_CACHE", str(tmp_path))
    assert default_cache_dir() == CacheLayout.default().root == tmp_path


@pytest.mark.usefixtures("one_torch_thread")
def test_a_network_fit_and_a_linear_fit_decode_the_dataset_once(tiny_card, tiny_folder, tmp_path):
    """The feature store (linear, and the probe that starts a partial fit's head) and the network
    strategies decode into the same <cache>/decoded folder: one file for one dataset and size."""
    from transferkit import TransferClassifier

    cache = CacheLayout(tmp_path / "cache")
    TransferClassifier(backbone=tiny_card, strategy="partial", epochs=1, batch_size=16, freeze_stages=1,
                       device="cpu", precision="fp32", cache_dir=cache.root, progress=False).fit(tiny_folder)
    TransferClassifier(backbone=tiny_card, strategy="linear", device="cpu", precision="fp32",
                       cache_dir=cache.root, progress=False).fit(tiny_folder)
    decoded = sorted(p.name for p in cache.decoded.iterdir())
    assert len(decoded) == 1 and decoded[0].startswith("decoded-32x32-"), decoded
    assert not (cache.features / "decoded").exists()
    assert not [p for p in cache.root.rglob("decoded-*") if p.parent != cache.decoded]


# ------------------------------------------------------------------ extraction runtime
@pytest.fixture()
def installed(monkeypatch):
    """Pretend exactly the named inference runtimes are importable."""
    def pretend(*names):
        monkeypatch.setattr(runtime, "runtime_available", lambda name: name in names)
    return pretend


@pytest.mark.parametrize(("names", "expected"), [
    (("openvino", "onnxruntime"), "openvino"), (("onnxruntime",), "onnxruntime"), ((), "torch")])
def test_auto_extraction_runtime_on_the_cpu_is_the_fastest_installed(installed, names, expected):
    installed(*names)
    assert runtime.resolve_extract_runtime("auto", CPU, "fp32") == expected


def test_auto_extraction_runtime_on_this_machine_is_an_inference_runtime():
    # onnxruntime is a dependency, so "auto" on the CPU never means PyTorch eager here.
    assert runtime.resolve_extract_runtime("auto", "cpu", "fp32") in runtime.CPU_RUNTIME_ORDER


def test_auto_extraction_runtime_is_torch_for_bf16_and_on_cuda(installed):
    installed("openvino", "onnxruntime")
    assert runtime.resolve_extract_runtime("auto", CPU, "bf16") == "torch"  # bf16 stays PyTorch's autocast
    assert runtime.resolve_extract_runtime("auto", CUDA, "bf16") == "torch"
    assert runtime.resolve_extract_runtime("auto", CUDA, "fp16") == "torch"


def test_forced_extraction_runtimes(installed):
    installed("openvino", "onnxruntime")
    assert runtime.resolve_extract_runtime("torch", CPU, "fp32") == "torch"
    assert runtime.resolve_extract_runtime("TORCH", CUDA, "bf16") == "torch"
    assert runtime.resolve_extract_runtime("onnxruntime", CPU, "fp32") == "onnxruntime"
    assert runtime.resolve_extract_runtime("openvino", CPU, "bf16") == "openvino"
    with pytest.raises(ConfigError, match="CPU only"):
        runtime.resolve_extract_runtime("openvino", CUDA, "bf16")
    with pytest.raises(ConfigError, match="fp32 only"):
        runtime.resolve_extract_runtime("onnxruntime", CPU, "bf16")
    installed("onnxruntime")
    with pytest.raises(ConfigError, match="pip install openvino"):
        runtime.resolve_extract_runtime("openvino", CPU, "fp32")


@pytest.mark.parametrize("bad", ["tensorrt", "", None, 3])
def test_unknown_extraction_runtime_names_the_choices(bad):
    with pytest.raises(ConfigError, match=r"'runtime'.*\['auto', 'torch', 'openvino', 'onnxruntime'\]"):
        runtime.resolve_extract_runtime(bad, CPU, "fp32")
