"""Fast tests of transferkit.features (feature store) on tiny fakes / models (resolver: test_runtime.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from features_fakes import FakeBackbone, FakeDataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transferkit
import transferkit.features as tkf
import transferkit.features.extract as extract_module  # holds the _after_chunk test hook
from transferkit.errors import ConfigError
from transferkit.features import FeatureSet, StoreWarning, compute_features, extract_features
from transferkit.io import sha256_json

HERE = Path(__file__).resolve().parent
LAYERS = ["stem", "stage1", "stage2", "pool"]


# Tiny models: one thread is as fast, and immune to a busy machine's OpenMP barrier stalls.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(bb, ds, layers, store, **kw):
    # The store's mechanics with PyTorch eager (the Spy counts its forward passes); the inference
    # runtimes (and the SIGKILL test below, which uses "auto") in test_extract_runtimes.py.
    kw = {"batch_size": 4, "chunk_size": 8, "progress": False, "device": "cpu", "precision": "fp32",
          "runtime": "torch", **kw}
    return extract_features(bb, ds, layers, store_dir=store, **kw)


class Spy:
    """Wraps forward_layers to record the layer lists it was called with."""

    def __init__(self, bb):
        self.calls: list[list[str]] = []
        inner = bb.forward_layers

        def wrapped(x, layers, pool="avg"):
            self.calls.append(list(layers))
            return inner(x, layers, pool=pool)

        bb.forward_layers = wrapped


# ----------------------------------------------------------------------------------- basics
def test_multi_layer_single_pass_equals_separate_passes(tmp_path):
    bb, ds = FakeBackbone(), FakeDataset(n=20)
    spy = Spy(bb)
    together = run(bb, ds, LAYERS, tmp_path / "a")
    assert len(spy.calls) == 5 and all(c == LAYERS for c in spy.calls)  # 20 images, batches of 4
    for layer in LAYERS:
        alone = run(bb, ds, [layer], tmp_path / f"b-{layer}")
        np.testing.assert_array_equal(together.features[layer], alone.features[layer])
    assert together.features["stem"].shape == (20, 8) and together.features["pool"].shape == (20, 32)
    assert all(v.dtype == np.float32 for v in together.features.values())
    np.testing.assert_array_equal(together.labels, ds.labels)


def test_second_run_reads_store_without_network_or_decoding(tmp_path):
    bb, ds = FakeBackbone(), FakeDataset(n=12)
    first = run(bb, ds, ["stage1", "pool"], tmp_path)
    assert not first.from_cache and first.computed == ["stage1", "pool"]
    calls, decodes = bb.calls, ds.decode_calls

    def boom(*a, **k):
        raise AssertionError("network must not run")

    bb.forward_layers = boom
    ds.decode = boom
    second = run(bb, ds, ["stage1", "pool"], tmp_path)
    assert second.from_cache and second.computed == []
    assert bb.calls == calls and ds.decode_calls == decodes
    for k in first.features:
        np.testing.assert_array_equal(first.features[k], second.features[k])
    assert second.keys == first.keys and all(p.is_file() for p in second.store_paths.values())
    assert not any(p.name.endswith(".partial") for p in Path(tmp_path).iterdir())


def test_subset_from_store_and_superset_computes_only_missing(tmp_path):
    bb, ds = FakeBackbone(), FakeDataset(n=12)
    run(bb, ds, ["stem", "pool"], tmp_path)
    spy = Spy(bb)
    sub = run(bb, ds, ["pool"], tmp_path)
    assert sub.from_cache and spy.calls == []
    sup = run(bb, ds, ["stage1", "pool", "stem"], tmp_path)
    assert not sup.from_cache and sup.computed == ["stage1"]
    assert spy.calls and all(c == ["stage1"] for c in spy.calls)
    assert list(sup.features) == ["stage1", "pool", "stem"]
    ref = run(FakeBackbone(), ds, ["stage1"], tmp_path / "ref")
    np.testing.assert_array_equal(sup.features["stage1"], ref.features["stage1"])


def key_of(bb, ds, layer="pool", pool="avg", precision="fp32", runtime="torch"):
    return sha256_json(tkf.layer_key_meta(bb, ds, layer, pool, precision, runtime=runtime))


def test_key_covers_everything_that_changes_the_numbers():
    ds = FakeDataset(n=8)
    base = key_of(FakeBackbone(), ds)
    assert key_of(FakeBackbone(), FakeDataset(n=8)) == base  # deterministic
    variants = {
        "weights": key_of(FakeBackbone(seed=1), ds),
        "arch": key_of(FakeBackbone(width=4), ds),
        "mean": key_of(FakeBackbone(mean=(0.4, 0.5, 0.5)), ds),
        "size": key_of(FakeBackbone(size=32), ds),
        "fingerprint": key_of(FakeBackbone(), FakeDataset(n=8, seed=1)),
        "layer": key_of(FakeBackbone(), ds, layer="stage2"),
        "pooling": key_of(FakeBackbone(), ds, pool=2),
        "precision": key_of(FakeBackbone(), ds, precision="bf16"),
        "runtime": key_of(FakeBackbone(), ds, runtime="openvino"),
        "runtime2": key_of(FakeBackbone(), ds, runtime="onnxruntime"),
    }
    assert len(set(variants.values()) | {base}) == len(variants) + 1, variants
    meta = tkf.layer_key_meta(FakeBackbone(), ds, "pool", "avg", "fp32", runtime="torch")
    assert meta["transferkit"] == transferkit.__version__
    assert meta["preprocessing"]["interpolation"] == "bilinear"


def test_weights_change_recomputes(tmp_path):
    ds = FakeDataset(n=8)
    a = run(FakeBackbone(seed=0), ds, ["pool"], tmp_path)
    b = run(FakeBackbone(seed=1), ds, ["pool"], tmp_path)
    assert not b.from_cache and a.keys != b.keys
    assert not np.array_equal(a.features["pool"], b.features["pool"])


def test_grid_pooling_and_decode_streaming_match(tmp_path):
    bb, ds = FakeBackbone(), FakeDataset(n=10)
    cached = run(bb, ds, ["stage1"], tmp_path / "a", pool=2, progress=True)  # rich bar on stderr
    streamed = run(bb, ds, ["stage1"], tmp_path / "b", pool=2, decode_cache=False)
    assert cached.features["stage1"].shape == (10, 16 * 4)
    np.testing.assert_array_equal(cached.features["stage1"], streamed.features["stage1"])
    # The decode cache lives next to the store (CacheLayout: <cache>/features, <cache>/decoded).
    assert len(list((tmp_path / "decoded").iterdir())) == 1
    assert not (tmp_path / "a" / "decoded").exists() and not (tmp_path / "b" / "decoded").exists()


def test_featureset_split_helpers(tmp_path):
    ds = FakeDataset(n=10)
    fs = run(FakeBackbone(), ds, ["stem", "pool"], tmp_path)
    X, y = fs.split("train", layer="pool")
    assert X.shape == (7, 32) and np.array_equal(y, ds.labels[:7])
    Xs, yv = fs.split_all("val")
    assert set(Xs) == {"stem", "pool"} and len(yv) == 3
    with pytest.raises(ConfigError, match="several layers"):
        fs.split("train")
    with pytest.raises(ConfigError, match="no 'test' split"):
        fs.split("test", layer="pool")
    assert isinstance(fs, FeatureSet) and len(fs) == 10 and fs.layers == ["stem", "pool"]


def test_invalid_arguments(tmp_path):
    bb, ds = FakeBackbone(), FakeDataset(n=4)
    with pytest.raises(ConfigError, match="no cut point"):
        run(bb, ds, ["nope"], tmp_path)
    with pytest.raises(ConfigError, match="pool"):
        run(bb, ds, ["pool"], tmp_path, pool="max")
    with pytest.raises(ConfigError, match="batch_size"):
        run(bb, ds, ["pool"], tmp_path, batch_size=0)
    with pytest.raises(ConfigError, match="precision"):
        run(bb, ds, ["pool"], tmp_path, precision="fp8")
    with pytest.raises(ConfigError):
        run(bb, ds, [], tmp_path)


def test_model_state_restored(tmp_path):
    bb, ds = FakeBackbone(), FakeDataset(n=4)
    bb.model.train()
    run(bb, ds, ["pool"], tmp_path)
    assert bb.model.training
    assert all(p.is_contiguous() for p in bb.model.parameters())


def test_compute_features_matches_store(tmp_path):
    bb, ds = FakeBackbone(), FakeDataset(n=9)
    fs = run(bb, ds, ["stage2", "pool"], tmp_path, batch_size=3)
    mem = compute_features(bb, ds.decode((16, 16)), ["stage2", "pool"], batch_size=3, device="cpu",
                           precision="fp32")  # runtime "torch" by default, like the store's run() here
    for k in mem:
        np.testing.assert_allclose(mem[k], fs.features[k], rtol=1e-5, atol=1e-6)
    out = tkf.write_feature_file(fs, tmp_path / "out.h5")
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["features/pool"][...], fs.features["pool"])
        assert f["labels"].shape == (9,)


# ------------------------------------------------------------------ corruption and resume
@pytest.mark.parametrize("damage", ["truncate", "flip", "no-marker", "garbage"])
def test_corrupt_final_file_is_recomputed(tmp_path, damage):
    bb, ds = FakeBackbone(), FakeDataset(n=10)
    good = run(bb, ds, ["pool"], tmp_path)
    path = good.store_paths["pool"]
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        with h5py.File(path, "r+") as f:
            f["features"][3, 5] += 1.0
    elif damage == "no-marker":
        with h5py.File(path, "r+") as f:
            del f.attrs["complete"]
    else:
        path.write_bytes(b"not an hdf5 file at all")
    with pytest.warns(StoreWarning, match="recomputed"):
        again = run(bb, ds, ["pool"], tmp_path)
    assert not again.from_cache
    np.testing.assert_array_equal(again.features["pool"], good.features["pool"])
    assert run(bb, ds, ["pool"], tmp_path).from_cache  # and the file is good again


class Interrupt(Exception):
    pass


def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch):
    ds = FakeDataset(n=30)
    ref = run(FakeBackbone(), ds, LAYERS, tmp_path / "ref")
    done = []

    def hook(s, e):
        done.append((s, e))
        if len(done) == 2:
            raise Interrupt

    monkeypatch.setattr(extract_module, "_after_chunk", hook)
    with pytest.raises(Interrupt):
        run(FakeBackbone(), ds, LAYERS, tmp_path / "run")
    key = ref.keys["pool"]
    assert not (tmp_path / "run" / f"{key}.h5").exists()
    assert len(list((tmp_path / "run" / f"{key}.partial").glob("*.npy"))) == 2
    # Simulate a kill between two layers' chunk writes: one layer lacks chunk 1.
    (tmp_path / "run" / f"{ref.keys['stem']}.partial" / "0000000008-0000000016.npy").unlink()
    done.clear()
    monkeypatch.setattr(extract_module, "_after_chunk", lambda s, e: done.append((s, e)))
    bb = FakeBackbone()
    spy = Spy(bb)
    resumed = run(bb, ds, LAYERS, tmp_path / "run")
    assert done == [(8, 16), (16, 24), (24, 30)]
    assert spy.calls[:2] == [["stem"], ["stem"]]  # chunk [8,16): only the missing layer
    for k in LAYERS:
        np.testing.assert_array_equal(resumed.features[k], ref.features[k])
    assert not (tmp_path / "run" / f"{key}.partial").exists()


def test_partial_with_other_layout_is_discarded(tmp_path, monkeypatch):
    ds = FakeDataset(n=20)

    def stop(s, e):
        raise Interrupt

    monkeypatch.setattr(extract_module, "_after_chunk", stop)
    with pytest.raises(Interrupt):
        run(FakeBackbone(), ds, ["pool"], tmp_path, chunk_size=8)
    monkeypatch.setattr(extract_module, "_after_chunk", None)
    with pytest.warns(StoreWarning, match="Discarding"):
        fs = run(FakeBackbone(), ds, ["pool"], tmp_path, chunk_size=4)
    ref = run(FakeBackbone(), ds, ["pool"], tmp_path / "ref", chunk_size=4)
    np.testing.assert_array_equal(fs.features["pool"], ref.features["pool"])


def test_sigkill_mid_extraction_then_resume_is_exact(tmp_path):
    pythonpath = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    script = str(HERE / "features_fakes.py")
    store = tmp_path / "store"
    proc = subprocess.Popen([sys.executable, script, str(store), str(tmp_path / "killed.npz"),
                             "--sleep", "0.4", "--chunk", "4", "--n", "48"], env=env)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if len(list(store.glob("*.partial/*.npy"))) >= 3:  # >= one chunk of each of 3 layers
                break
            if proc.poll() is not None:
                pytest.fail("the extraction finished before it could be killed")
            time.sleep(0.05)
        else:
            pytest.fail("no chunk file appeared within 60 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not list(store.glob("*.h5")), "a final file exists although the run was killed mid-way"
    n_chunks = len(list(store.glob("*.partial/*.npy")))
    assert 3 <= n_chunks < 36
    done = []
    extract_module._after_chunk = lambda s, e: done.append(s)
    try:  # re-run (in this process) on the same store: only the missing chunks are computed
        resumed = extract_features(FakeBackbone(), FakeDataset(n=48), ["stem", "stage2", "pool"], store_dir=store,
                                   batch_size=2, chunk_size=4, progress=False, device="cpu", precision="fp32")
    finally:
        extract_module._after_chunk = None
    assert 0 < len(done) < 12 and not resumed.from_cache
    fresh = extract_features(FakeBackbone(), FakeDataset(n=48), ["stem", "stage2", "pool"],
                             store_dir=tmp_path / "fresh", batch_size=2, chunk_size=4, progress=False,
                             device="cpu", precision="fp32")
    for k in ("stem", "stage2", "pool"):
        np.testing.assert_array_equal(resumed.features[k], fresh.features[k])
    assert not list(store.glob("*.partial")) and len(list(store.glob("*.h5"))) == 3


# ------------------------------------------------------------------------- property test
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 23), chunk=st.integers(1, 9), batch=st.integers(1, 5),
       dims=st.lists(st.integers(1, 6), min_size=1, max_size=4),
       first=st.sets(st.integers(0, 3), min_size=1), second=st.sets(st.integers(0, 3), min_size=1))
def test_store_round_trip_property(n, chunk, batch, dims, first, second):
    names = [f"l{i}" for i in range(len(dims))]
    first = [names[i % len(names)] for i in sorted(first)]
    second = [names[i % len(names)] for i in sorted(second)]
    ds = FakeDataset(n=n, native=(5, 6))
    bb = LinearBackbone(dims)
    x = torch.from_numpy(ds.decode((4, 4)))
    expected = {k: v.numpy() for k, v in bb.forward_layers(x, names).items()}
    with tempfile.TemporaryDirectory() as cache:
        store = Path(cache) / "features"  # the decode cache goes to <cache>/decoded, inside the temporary
        a = run(bb, ds, first, store, batch_size=batch, chunk_size=chunk)
        b = run(bb, ds, second, store, batch_size=batch, chunk_size=chunk)
        assert b.from_cache == set(second).issubset(first)
        for fs in (a, b):
            for k, v in fs.features.items():
                assert v.shape == (n, dims[names.index(k)])
                np.testing.assert_allclose(v, expected[k], rtol=1e-5, atol=1e-5)
        for k in set(first) & set(second):
            np.testing.assert_array_equal(a.features[k], b.features[k])


class LinearBackbone(FakeBackbone):
    """Layers l0..lk: fixed linear maps of the per-channel image means, of width dims[i]."""

    def __init__(self, dims):
        super().__init__(size=4)
        self.dims = list(dims)
        self.weights_hash = "linear-" + "-".join(map(str, dims))
        g = torch.Generator().manual_seed(len(dims))
        self.maps = [torch.randn(3, d, generator=g) for d in dims]

    def layer(self, name):
        if name not in {f"l{i}" for i in range(len(self.dims))}:
            raise ConfigError(name)
        return name

    def forward_layers(self, x, layers, pool="avg"):
        m = x.float().mean((2, 3))
        return {k: m @ self.maps[int(k[1:])] for k in layers}


# ------------------------------------------------------------- real data / backbones modules
@pytest.fixture(scope="module")
def real(tiny_card, tiny_folder):
    from transferkit.backbones import load_backbone
    from transferkit.data import load_dataset

    return load_backbone(str(tiny_card)), load_dataset(str(tiny_folder))


def test_real_modules_multi_layer_pass_store_hit_and_bf16(real, tmp_path):
    bb, ds = real
    layers = ["stage1", "stage3", "pool"]
    together = extract_features(bb, ds, layers, store_dir=tmp_path / "a", batch_size=8, device="cpu",
                                precision="fp32", progress=False, chunk_size=16, runtime="torch")
    assert together.features["pool"].shape == (len(ds), bb.num_features)
    for layer in layers:
        assert together.features[layer].shape[1] == bb.layer(layer).channels
        alone = extract_features(bb, ds, [layer], store_dir=tmp_path / f"b-{layer}", batch_size=8,
                                 device="cpu", precision="fp32", progress=False, chunk_size=16, runtime="torch")
        np.testing.assert_array_equal(together.features[layer], alone.features[layer])
    decode = ds.decode
    ds.decode = None  # a store hit must not decode
    try:
        again = extract_features(bb, ds, layers[::-1], store_dir=tmp_path / "a", batch_size=8, device="cpu",
                                 precision="fp32", progress=True, runtime="torch")
    finally:
        ds.decode = decode
    assert again.from_cache and list(again.features) == layers[::-1]
    bf = extract_features(bb, ds, ["pool"], store_dir=tmp_path / "a", batch_size=8, device="cpu",
                          precision="bf16", progress=False)
    assert not bf.from_cache and bf.keys["pool"] != together.keys["pool"]
    rel = np.abs(bf.features["pool"] - together.features["pool"]).max() / np.abs(together.features["pool"]).max()
    assert rel < 0.2
    X, y = together.split("train", layer="pool")
    assert len(X) == int((ds.splits == "train").sum()) and set(y) <= set(range(len(ds.classes)))
