"""Feature extraction on the inference runtimes (OpenVINO, ONNX Runtime) against PyTorch eager fp32.

Exact means: per layer, ``max |runtime - eager| / max |eager|`` <= 1e-4 (``runtimes.relative_error``).
The resolver's choice itself is tested in test_runtime.py.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from features_fakes import FakeBackbone, FakeDataset
from typer.testing import CliRunner

import transferkit.features.extract as extract_module
import transferkit.features.runtimes as runtimes
from transferkit.errors import ConfigError
from transferkit.features import StoreWarning, compute_features, extract_features
from transferkit.features.runtimes import EXACT_TOLERANCE, RuntimeFallbackWarning, relative_error
from transferkit.runtime import runtime_available

RUNTIMES = [pytest.param(r, marks=pytest.mark.skipif(not runtime_available(r), reason=f"{r} not installed"))
            for r in ("openvino", "onnxruntime")]
LAYERS = ["stem", "stage1", "stage2", "pool"]


# Tiny models: one thread is as fast, and immune to a busy machine's OpenMP barrier stalls.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(bb, ds, layers, cache, runtime, **kw):
    kw = {"batch_size": 4, "chunk_size": 8, "progress": False, "device": "cpu", "precision": "fp32", **kw}
    return extract_features(bb, ds, layers, store_dir=cache / "features", runtime=runtime, **kw)


def onnx_files(cache):
    return sorted((cache / "compiled").glob("*.onnx"))


@pytest.fixture(scope="module")
def real(tiny_card, tiny_folder):
    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset

    return load_backbone(str(tiny_card)), load_dataset(str(tiny_folder))


# ------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_matches_eager_fp32_on_a_real_tiny_model(real, tmp_path, runtime):
    bb, ds = real
    layers = ["stem", "stage2", "stage4", "pool"]
    eager = run(bb, ds, layers, tmp_path, "torch", batch_size=8, chunk_size=16)
    fast = run(bb, ds, layers, tmp_path, runtime, batch_size=8, chunk_size=16)
    assert eager.runtime == "torch" and fast.runtime == runtime and not fast.from_cache
    for layer in layers:
        assert fast.features[layer].shape == eager.features[layer].shape
        assert relative_error(fast.features[layer], eager.features[layer]) <= EXACT_TOLERANCE, layer
        assert fast.keys[layer] != eager.keys[layer]  # runtimes never share a store file
    assert len(onnx_files(tmp_path)) == 1  # one graph for the four cut points
    assert run(bb, ds, layers, tmp_path, runtime, batch_size=8, chunk_size=16).from_cache
    assert run(bb, ds, layers, tmp_path, "torch", batch_size=8, chunk_size=16).from_cache


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_matches_eager_on_the_fake_with_grid_pooling(tmp_path, runtime):
    bb, ds = FakeBackbone(), FakeDataset(n=10)
    eager = run(bb, ds, ["stage1", "stage2"], tmp_path, "torch", pool=2)
    fast = run(bb, ds, ["stage1", "stage2"], tmp_path, runtime, pool=2)
    assert fast.runtime == runtime and fast.features["stage1"].shape == (10, 16 * 4)
    for layer in ("stage1", "stage2"):
        assert relative_error(fast.features[layer], eager.features[layer]) <= EXACT_TOLERANCE


def test_auto_uses_the_resolved_runtime_and_says_so(real, tmp_path):
    bb, ds = real
    fs = run(bb, ds, ["pool"], tmp_path, "auto")
    assert fs.runtime in ("openvino", "onnxruntime") and fs.precision == "fp32"
    bf = run(bb, ds, ["pool"], tmp_path, "auto", precision="bf16")
    assert bf.runtime == "torch"  # bf16 stays PyTorch autocast, opt-in


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_compute_features_on_a_runtime(real, tmp_path, runtime):
    bb, ds = real
    images = ds.decode(bb.preprocessing.size, "bilinear", None, progress=False)[:10]
    eager = compute_features(bb, images, ["stage3", "pool"], device="cpu", batch_size=4)
    fast = compute_features(bb, images, ["stage3", "pool"], device="cpu", batch_size=4, runtime=runtime,
                            cache_dir=tmp_path)
    for layer in eager:
        assert relative_error(fast[layer], eager[layer]) <= EXACT_TOLERANCE
    with pytest.raises(ConfigError, match="uint8"):
        compute_features(bb, images.astype(np.float32), ["pool"], device="cpu", runtime=runtime, cache_dir=tmp_path)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_runtime_runs_on_as_many_threads_as_torch(tmp_path, runtime):
    torch.set_num_threads(2)  # the autouse fixture restores it
    with runtimes.open_engine(FakeBackbone(), ["pool"], "avg", runtime=runtime, device=torch.device("cpu"),
                              precision="fp32", cache_dir=tmp_path, forced=True) as engine:
        assert engine.runtime == runtime and engine.threads == 2


# --------------------------------------------------------------------------- the graph cache
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cached_graph_is_reused_not_exported_again(tmp_path, monkeypatch, runtime):
    first = run(FakeBackbone(), FakeDataset(n=8), LAYERS, tmp_path, runtime)
    [graph] = onnx_files(tmp_path)
    stamp = graph.stat().st_mtime_ns

    def no_export(*a, **k):
        raise AssertionError("the cached graph must be reused")

    monkeypatch.setattr(runtimes, "_export", no_export)
    other = run(FakeBackbone(), FakeDataset(n=8, seed=3), LAYERS, tmp_path, runtime)  # new images: computed
    assert not other.from_cache and other.runtime == runtime
    assert onnx_files(tmp_path) == [graph] and graph.stat().st_mtime_ns == stamp
    assert not np.array_equal(other.features["pool"], first.features["pool"])
    monkeypatch.undo()
    # Other weights (same architecture and names) are another graph, never the cached one.
    changed = run(FakeBackbone(seed=1), FakeDataset(n=8), LAYERS, tmp_path, runtime)
    assert len(onnx_files(tmp_path)) == 2
    eager = run(FakeBackbone(seed=1), FakeDataset(n=8), LAYERS, tmp_path, "torch")
    assert relative_error(changed.features["pool"], eager.features["pool"]) <= EXACT_TOLERANCE


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-record", "other-record"])
def test_a_corrupt_cached_graph_is_rebuilt_not_trusted(tmp_path, damage):
    runtime = "onnxruntime"
    good = run(FakeBackbone(), FakeDataset(n=8), LAYERS, tmp_path, runtime)
    [graph] = onnx_files(tmp_path)
    record = graph.with_suffix(".json")
    data = bytearray(graph.read_bytes())
    if damage == "flip":  # a weight changes: still a valid ONNX file, only the checksum can tell
        data[len(data) // 2] ^= 0x40
        graph.write_bytes(bytes(data))
    elif damage == "truncate":
        graph.write_bytes(bytes(data[: len(data) // 3]))
    elif damage == "no-record":
        record.unlink()
    else:
        rec = json.loads(record.read_text())
        record.write_text(json.dumps({**rec, "key": "0" * 64}))
    with pytest.warns(StoreWarning, match="exporting it again"):
        again = run(FakeBackbone(), FakeDataset(n=8, seed=5), LAYERS, tmp_path, runtime)
    assert again.runtime == runtime
    assert runtimes._graph_problem(graph, record, graph.stem) is None  # rebuilt: file and record agree
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)  # and it is trusted again
        fresh = run(FakeBackbone(), FakeDataset(n=8), LAYERS, tmp_path / "other", runtime)
    np.testing.assert_array_equal(fresh.features["pool"], good.features["pool"])


# ------------------------------------------------------------------------- fallback and errors
def test_auto_falls_back_to_eager_with_one_warning_when_the_graph_cannot_be_built(real, tmp_path):
    bb, ds = real
    # A 3 x 3 grid of a 16 x 16 map: adaptive pooling the ONNX exporter cannot express.
    with pytest.warns(RuntimeFallbackWarning, match=r"(?s)could not build .*ONNX export failed.*PyTorch eager") as w:
        fs = run(bb, ds, ["stem"], tmp_path, "auto", pool=3)
    assert fs.runtime == "torch"
    assert len(w) == 1 and str(w[0].message).count("ONNX export failed") == 1  # no second runtime tried
    eager = run(bb, ds, ["stem"], tmp_path, "torch", pool=3)
    assert eager.from_cache and eager.keys == fs.keys  # the fallback's features are PyTorch's, keyed so
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeFallbackWarning)  # said once per reason and process
        run(bb, ds, ["stem"], tmp_path / "again", "auto", pool=3)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_forced_runtime_that_cannot_be_built_is_an_error(real, tmp_path, runtime):
    bb, ds = real
    with pytest.raises(ConfigError, match=rf"runtime='{runtime}' could not be built.*runtime='torch'"):
        run(bb, ds, ["stem"], tmp_path, runtime, pool=3)


def test_a_runtime_that_is_not_exact_is_not_used(tmp_path, monkeypatch):
    real_check = runtimes.check_exact

    def off_by_a_lot(engine, backbone, layers, pool, n=2):
        inner = engine._run
        engine._run = lambda x: [o * 1.01 for o in inner(x)]  # a 1% error, far above 1e-4
        return real_check(engine, backbone, layers, pool, n)

    monkeypatch.setattr(runtimes, "check_exact", off_by_a_lot)
    with pytest.warns(RuntimeFallbackWarning, match="differs from PyTorch eager"):
        fs = run(FakeBackbone(), FakeDataset(n=8), ["pool"], tmp_path, "auto")
    assert fs.runtime == "torch"
    with pytest.raises(ConfigError, match="differs from PyTorch eager"):
        run(FakeBackbone(), FakeDataset(n=8), ["pool"], tmp_path / "b", "onnxruntime")


@pytest.mark.skipif(not (runtime_available("openvino") and runtime_available("onnxruntime")),
                    reason="needs both runtimes")
def test_auto_takes_onnxruntime_when_openvino_cannot_be_built(tmp_path, monkeypatch):
    real_engine = runtimes.GraphEngine

    def no_openvino(runtime, *a, **k):
        if runtime == "openvino":
            raise RuntimeError("CPU plugin refused the graph")
        return real_engine(runtime, *a, **k)

    monkeypatch.setattr(runtimes, "GraphEngine", no_openvino)
    with pytest.warns(RuntimeFallbackWarning, match=r"openvino: RuntimeError: CPU plugin refused.*with onnxruntime"):
        fs = run(FakeBackbone(), FakeDataset(n=8), ["pool"], tmp_path, "auto")
    assert fs.runtime == "onnxruntime"
    assert run(FakeBackbone(), FakeDataset(n=8), ["pool"], tmp_path, "onnxruntime").from_cache  # its keys


def test_unknown_runtime_is_refused_before_any_work(tmp_path):
    ds = FakeDataset(n=4)
    with pytest.raises(ConfigError, match=r"'runtime'.*\['auto', 'torch', 'openvino', 'onnxruntime'\]"):
        run(FakeBackbone(), ds, ["pool"], tmp_path, "tensorrt")
    assert ds.decode_calls == 0 and not (tmp_path / "features").exists()


# ----------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_resume_on_a_runtime_is_bit_identical(tmp_path, monkeypatch, runtime):
    ds = FakeDataset(n=30)
    ref = run(FakeBackbone(), ds, LAYERS, tmp_path / "ref", runtime)

    def stop_after_two(s, e, done=[]):  # noqa: B006 - the counter lives in the default
        done.append(s)
        if len(done) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(extract_module, "_after_chunk", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(FakeBackbone(), ds, LAYERS, tmp_path / "run", runtime)
    monkeypatch.setattr(extract_module, "_after_chunk", None)
    resumed = run(FakeBackbone(), ds, LAYERS, tmp_path / "run", runtime)
    assert not resumed.from_cache
    for layer in LAYERS:
        np.testing.assert_array_equal(resumed.features[layer], ref.features[layer])


# -------------------------------------------------------------------------------------- CLI
def test_cli_extract_runtime_option(tiny_card, tiny_folder, tmp_path):
    from transferkit.cli import app

    runner = CliRunner()
    args = ["extract", str(tiny_folder), "--backbone", str(tiny_card), "--layers", "stage2,pool",
            "--cache-dir", str(tmp_path), "--quiet", "--json", "--device", "cpu"]
    forced = json.loads(runner.invoke(app, [*args, "--runtime", "torch"], catch_exceptions=False).stdout)
    auto = json.loads(runner.invoke(app, args, catch_exceptions=False).stdout)
    assert forced["runtime"] == "torch" and auto["runtime"] in ("openvino", "onnxruntime")
    assert not auto["from_cache"]  # the PyTorch run's features are not reused for another runtime
    bad = runner.invoke(app, [*args, "--runtime", "tensorrt"])
    assert bad.exit_code != 0 and "onnxruntime" in bad.output and "Traceback" not in bad.output
