"""Faults a user's machine or files cause, and what transferkit does about them.

- A full disk (ENOSPC) part-way through a write: a feature-store chunk, the final store file, a
  feature export, an engine checkpoint, a run directory's model and metrics. Each gives a
  ``StoreError`` saying "No space left on device", leaves the previous file byte-for-byte intact and
  no temporary behind, and the same call succeeds (and resumes) once there is space.
- The CLI on bad datasets, untrusted files and a diverging run: exit code 2 and one line on
  stderr naming the file or field, never a traceback (tests/cli_server.py runs the real CLI).
- Determinism through the CLI: two ``fit --strategy partial`` runs give identical bytes.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from features_fakes import FakeBackbone, FakeDataset
from safetensors.torch import load_file, save_file

import transferkit.features.extract as tkf  # the module that reads the _after_chunk hook
from transferkit.errors import StoreError
from transferkit.features import extract_features, write_feature_file

NO_SPACE = "No space left on device"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class DiskFull:
    """Make the ``at``-th write whose file name matches ``match`` write half its bytes, then fail
    with ENOSPC, the way a write on a full disk does. Patches ``Path.write_bytes`` (what
    ``atomic_write_*``, feature chunks and checkpoint state use) and ``safetensors.torch.save_file``
    (model weights; on a real full disk it raises SafetensorError "... No space left on device
    (os error 28)", emulated here)."""

    def __init__(self, monkeypatch, match: str, at: int = 1):
        self.match, self.at, self.seen, self.fired = match, at, 0, False
        real_write = Path.write_bytes

        def write_bytes(path, data):
            if self._hit(path):
                real_write(path, bytes(memoryview(data)[: len(data) // 2]))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(path, data)

        import safetensors.torch as st

        real_save = st.save_file

        def save_file_(tensors, filename, metadata=None):
            if self._hit(Path(filename)):
                Path(filename).write_bytes(b"\0" * 100)
                raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
            return real_save(tensors, filename, metadata=metadata)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
        monkeypatch.setattr(st, "save_file", save_file_)
        for mod in ("transferkit.strategies._probe", "transferkit.strategies._network"):
            monkeypatch.setattr(f"{mod}.save_file", save_file_)

    def _hit(self, path: Path) -> bool:
        if self.match not in path.name:
            return False
        self.seen += 1
        if self.seen == self.at:
            self.fired = True
            return True
        return False


# ------------------------------------------------------------------------- feature store
def run(store, **kw):
    kw = {"batch_size": 4, "chunk_size": 8, "progress": False, "device": "cpu", "precision": "fp32", **kw}
    return extract_features(FakeBackbone(), FakeDataset(n=30), ["stem", "pool"], store_dir=store, **kw)


def test_disk_full_during_a_chunk_write_keeps_earlier_chunks_and_resumes(tmp_path, monkeypatch):
    ref = run(tmp_path / "ref")
    store = tmp_path / "store"
    full = DiskFull(monkeypatch, "-0000000016.npy", at=2)  # chunk [8, 16) of the second layer
    with pytest.raises(StoreError, match=NO_SPACE) as info:
        run(store)
    assert full.fired and "previous version of the file (if any) is intact" in str(info.value)
    assert not temporaries(store)
    chunks = sorted(p.name for p in store.glob("*.partial/*.npy"))
    assert chunks == ["0000000000-0000000008.npy"] * 2 + ["0000000008-0000000016.npy"]
    for p in store.glob("*.partial/*.npy"):
        assert np.load(p).shape[0] == 8
    first = "0000000000-0000000008.npy"
    assert len([k for k in snapshot(store) if k.endswith(first)]) == 2  # chunk [0, 8) of both layers on disk
    monkeypatch.undo()
    done, written = [], []
    real_write = Path.write_bytes

    def spy_write(path, data):
        written.append(path.name)
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", spy_write)
    monkeypatch.setattr(tkf, "_after_chunk", lambda s, e: done.append(s))
    resumed = run(store)
    assert done == [8, 16, 24]  # chunk [0, 8) was not computed again ...
    assert any("0000000016-0000000024.npy" in n for n in written)  # (the spy sees chunk writes)
    assert not [n for n in written if first in n]  # ... nor rewritten: it was read from disk
    for k in ref.features:
        np.testing.assert_array_equal(resumed.features[k], ref.features[k])
    assert not temporaries(store) and not list(store.glob("*.partial"))


def test_disk_full_during_consolidation_keeps_chunks(tmp_path, monkeypatch):
    import h5py

    ref = run(tmp_path / "ref")
    store = tmp_path / "store"
    real_setitem = h5py.Dataset.__setitem__
    calls = []

    def setitem(self, key, value):  # HDF5's own message on a full disk, errno in the text only
        calls.append(key)
        if len(calls) == 2:
            raise OSError(f"Can't synchronously write data (file write failed: errno = 28, error message = "
                          f"'{NO_SPACE}')")
        return real_setitem(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", setitem)
    with pytest.raises(StoreError, match=NO_SPACE):
        run(store)
    assert not temporaries(store) and not list(store.glob("*.h5"))
    assert len(list(store.glob("*.partial/*.npy"))) == 8  # every chunk of both layers kept
    monkeypatch.undo()
    spy = []
    monkeypatch.setattr(tkf, "_after_chunk", lambda s, e: spy.append(s))
    again = run(store)
    assert spy == []  # nothing recomputed: only the consolidation ran again
    for k in ref.features:
        np.testing.assert_array_equal(again.features[k], ref.features[k])


def test_disk_full_during_feature_export_keeps_the_previous_file(tmp_path, monkeypatch):
    import h5py

    fs = run(tmp_path / "store")
    out = tmp_path / "features.h5"
    write_feature_file(fs, out)
    before = out.read_bytes()
    real_create = h5py.Group.create_dataset

    def create_dataset(self, name, *a, **kw):
        if name == "labels":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_create(self, name, *a, **kw)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    with pytest.raises(StoreError, match=NO_SPACE):
        write_feature_file(fs, out)
    assert out.read_bytes() == before and not temporaries(tmp_path)


def test_disk_full_during_decode_cache_is_a_store_error_not_sigbus(tmp_path, monkeypatch):
    """The decode cache is written through a memory map; on a full disk that was a SIGBUS."""
    from conftest import make_image_folder

    from transferkit.data import dataset as dsmod
    from transferkit.data import load_dataset

    ds = load_dataset(make_image_folder(tmp_path / "imgs", per_class=3, size=8), progress=False)

    def fallocate(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dsmod.os, "posix_fallocate", fallocate)
    with pytest.raises(StoreError, match=NO_SPACE):
        ds.decode((8, 8), cache_dir=tmp_path / "decoded", progress=False)
    assert not list((tmp_path / "decoded").iterdir())
    monkeypatch.undo()
    assert ds.decode((8, 8), cache_dir=tmp_path / "decoded", progress=False).shape == (9, 3, 8, 8)


# ------------------------------------------------------------------------- engine checkpoints
@pytest.mark.parametrize("failing", ["model.safetensors", "state.pt", "latest.json"])
def test_disk_full_during_a_checkpoint_keeps_the_previous_one_and_resumes(tmp_path, monkeypatch, failing):
    from test_engine import make_data, state, tiny_net

    from transferkit.engine import TrainConfig, fit_network

    cfg = TrainConfig(epochs=2, batch_size=16, lr=3e-3, precision="32-true", seed=0)
    data = make_data(32, 0)
    ref = tiny_net()
    fit_network(ref, data, None, cfg, tmp_path / "ref", progress=False, device="cpu")

    run_dir = tmp_path / "run"
    full = DiskFull(monkeypatch, failing, at=2)  # the epoch-2 checkpoint
    with pytest.raises(StoreError, match=NO_SPACE) as info:
        fit_network(tiny_net(), data, None, cfg, run_dir, progress=False, device="cpu")
    assert full.fired
    ck = run_dir / "checkpoints"
    if failing == "latest.json":  # the checkpoint folder is in place; the pointer write says what it kept
        assert "latest.json; the previous version of the file (if any) is intact" in str(info.value)
    else:
        assert "previous checkpoint (epoch_0001) is intact" in str(info.value)
    assert json.loads((ck / "latest.json").read_text())["epoch"] == 1
    assert (ck / "epoch_0001" / "meta.json").is_file()
    load_file(str(ck / "epoch_0001" / "model.safetensors"))
    torch.load(ck / "epoch_0001" / "state.pt", weights_only=True)
    assert not temporaries(run_dir)
    monkeypatch.undo()
    net = tiny_net(seed=3)
    res = fit_network(net, data, None, cfg, run_dir, progress=False, device="cpu", resume=True)
    assert res.resumed_from == 1
    assert all(torch.equal(state(net)[k], v) for k, v in state(ref).items())  # bit-exact after resuming


# ------------------------------------------------------------------------- run directory
def test_disk_full_writing_a_run_directory_keeps_the_previous_files(tiny_card, tiny_folder, tmp_path, monkeypatch):
    from transferkit.api import TransferClassifier

    run_dir = tmp_path / "run"
    clf = TransferClassifier(tiny_card, "linear", cache_dir=tmp_path / "cache", device="cpu", precision="fp32",
                             progress=False)
    clf.fit(tiny_folder, run_dir=run_dir)
    before = snapshot(run_dir)
    for failing in ("model.safetensors", "model.json", "history.json", "metrics.json"):
        with monkeypatch.context() as m:
            full = DiskFull(m, failing)
            with pytest.raises(StoreError, match=NO_SPACE):
                clf.save(run_dir)
            assert full.fired
        after = snapshot(run_dir)
        for name in ("model/model.safetensors", "model/model.json", "history.json", "metrics.json"):
            assert after[name] == before[name], (failing, name)
        assert not temporaries(run_dir)
    assert TransferClassifier.load(run_dir, cache_dir=tmp_path / "cache").score(tiny_folder) == clf.metrics_["accuracy"]


# ------------------------------------------------------------------------- the CLI
def one_line_error(result, *needles: str) -> str:
    """Exit code 2, one line on stderr starting 'error:', containing ``needles``, no traceback."""
    err = result.stderr.strip()
    assert result.rc == 2, f"exit {result.rc}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert err.startswith("error:") and "\n" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


def fit(cli, data, backbone, tmp_path, *extra):
    return cli.run("fit", data, "-b", backbone, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                   "--precision", "fp32", "--device", "cpu", "--quiet", *extra)


def png(path: Path, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def test_cli_bad_datasets_exit_2_with_one_line(cli, tiny_card, tmp_path):
    # a CSV manifest that points outside its folder
    png(tmp_path / "secret.png", 1)
    for i in range(4):
        png(tmp_path / "data" / f"{i}.png", 10 + i)
    (tmp_path / "data" / "m.csv").write_text("0.png,a\n1.png,b\n2.png,a\n../secret.png,b\n3.png,b\n")
    one_line_error(fit(cli, tmp_path / "data" / "m.csv", tiny_card, tmp_path / "csv"),
                   "m.csv", "row 4", "outside the manifest's folder")
    # a test split with classes the training split lacks
    for cls in ("a", "b"):
        for i in range(3):
            png(tmp_path / "split" / "train" / cls / f"{i}.png", 100 + 3 * ord(cls) + i)
    for cls in ("a", "zebra"):
        png(tmp_path / "split" / "test" / cls / "0.png", 200 + len(cls))
    one_line_error(fit(cli, tmp_path / "split", tiny_card, tmp_path / "t"), "test split has class(es) ['zebra']")
    # no class folders at all; a folder whose every image is unreadable
    png(tmp_path / "flat" / "a.png", 5)
    one_line_error(fit(cli, tmp_path / "flat", tiny_card, tmp_path / "f"), "flat", "no class sub-folders")
    (tmp_path / "broken" / "a").mkdir(parents=True)
    (tmp_path / "broken" / "a" / "x.jpg").write_bytes(b"")
    (tmp_path / "broken" / "b").mkdir()
    (tmp_path / "broken" / "b" / "y.png").write_text("not a png")
    one_line_error(fit(cli, tmp_path / "broken", tiny_card, tmp_path / "b"), "broken")
    # a data path that does not exist
    one_line_error(fit(cli, tmp_path / "nope", tiny_card, tmp_path / "n"), "nope")


def test_cli_empty_and_single_image_classes(cli, tiny_card, tiny_folder, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_folder, data)
    (data / "train" / "empty").mkdir()  # an empty class folder is not made a class
    r = fit(cli, data, tiny_card, tmp_path / "e", "--json")
    assert r.rc == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["metrics"]["classes"] == ["blue", "green", "red"]
    # a class with a single training image: linear's cross-validation cannot run; said in one line
    (data / "train" / "empty").rmdir()
    solo = data / "train" / "solo"
    solo.mkdir()
    png(solo / "only.png", 77)
    one_line_error(fit(cli, data, tiny_card, tmp_path / "s"), "at least 2 training images in every class")
    # partial fine-tuning trains: its head cannot start from the cross-validated linear probe, so it
    # starts at random and the run says why
    r = fit(cli, data, tiny_card, tmp_path / "p", "--strategy", "partial", "--epochs", "1", "--json")
    assert r.rc == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["metrics"]["classes"] == ["blue", "green", "red", "solo"]
    from transferkit import TransferClassifier

    head = TransferClassifier.load(tmp_path / "p" / "run").model_.info["head_init"]
    assert head["kind"].startswith("random") and "at least 2 training images in every class" in head["reason"]


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_cli_untrusted_files_exit_2(cli, tiny_card, tiny_folder, tmp_path):
    marker = tmp_path / "PWNED"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, tmp_path / "evil.pth")
    for cmd in ("fit", "extract"):
        args = [cmd, tiny_folder, "-b", "mobilenetv2_035", "--weights", tmp_path / "evil.pth", "--cache-dir",
                tmp_path / "cache", "--quiet"] + (["--out", tmp_path / "run"] if cmd == "fit" else [])
        one_line_error(cli.run(*args), "evil.pth", "weights_only=True")
        assert not marker.exists(), "the pickle payload ran"
    # a card can only name architectures through the registry
    card = json.loads(tiny_card.read_text())
    evil = tmp_path / "cards"
    evil.mkdir()
    (evil / "evil.json").write_text(json.dumps({**card, "architecture": "os.system"}))
    one_line_error(fit(cli, tiny_folder, evil / "evil.json", tmp_path / "a"), "Unknown architecture 'os.system'")
    # a card whose weights leave its folder
    (evil / "sub").mkdir()
    (evil / "sub" / "out.json").write_text(json.dumps({**card, "weights": str(tiny_card.parent / card["weights"])}))
    one_line_error(fit(cli, tiny_folder, evil / "sub" / "out.json", tmp_path / "o"), "outside the card's folder")
    (evil / "sub" / "dots.json").write_text(json.dumps({**card, "weights": "../../x.safetensors"}))
    one_line_error(fit(cli, tiny_folder, evil / "sub" / "dots.json", tmp_path / "d"), "outside the card's folder")


def test_cli_outside_weights_can_be_allowed_explicitly(cli, tiny_card, tiny_folder, tmp_path):
    card = json.loads(tiny_card.read_text())
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "out.json").write_text(json.dumps({**card, "weights": str(tiny_card.parent / card["weights"])}))
    r = cli.run("extract", tiny_folder, "-b", tmp_path / "c" / "out.json", "--allow-outside-weights",
                "--cache-dir", tmp_path / "cache", "--quiet")
    assert r.rc == 0, r.stderr


def test_cli_divergence_exit_2_keeps_the_last_good_checkpoint(cli, tiny_card, tiny_folder, tmp_path):
    """A NaN loss in epoch 2 (a frozen BatchNorm variance made negative in the epoch-1 checkpoint
    stands in for a numerical blow-up): exit 2, one line naming the epoch and the kept checkpoint."""
    args = ["--strategy", "partial", "--epochs", "3", "--batch-size", "8"]
    r = cli.run("fit", tiny_folder, "-b", tiny_card, "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache",
                "--precision", "fp32", "--device", "cpu", "--quiet", *args,
                env={"TRANSFERKIT_TEST_KILL_AT": "engine.epoch_end:1"})
    assert r.killed
    ck = tmp_path / "run" / "checkpoints" / "epoch_0001"
    weights = load_file(str(ck / "model.safetensors"))
    key = next(k for k in weights if k.endswith("running_var") and ".blocks.0." in k)  # stage1: frozen
    weights[key] = -torch.ones_like(weights[key])
    save_file(weights, str(ck / "model.safetensors"))
    before = snapshot(ck)
    err = one_line_error(fit(cli, tiny_folder, tiny_card, tmp_path, *args, "--resume"),
                         "Training diverged", "epoch 2", "epoch_0001) is kept", "Lower the learning rate")
    assert "nan" in err.lower()
    assert snapshot(ck) == before
    latest = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert latest["epoch"] == 1 and not (tmp_path / "run" / "model").exists()


def test_cli_same_seed_same_bytes(cli, tiny_card, tiny_folder, tmp_path):
    runs = []
    for name in ("a", "b"):
        r = cli.run("fit", tiny_folder, "-b", tiny_card, "--strategy", "partial", "--epochs", "1", "--precision",
                    "fp32", "--device", "cpu", "--out", tmp_path / name, "--cache-dir", tmp_path / f"cache_{name}",
                    "--quiet")
        assert r.rc == 0, r.stderr[-3000:]
        runs.append(tmp_path / name)
    a, b = (json.loads((p / "metrics.json").read_text())["scored"] for p in runs)
    assert a["accuracy"] == b["accuracy"] and a == b
    weights = [(p / "model" / "model.safetensors").read_bytes() for p in runs]
    assert weights[0] == weights[1]
