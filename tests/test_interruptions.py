"""SIGKILL at many different points of ``transferkit extract`` and ``transferkit fit``.

Each case runs the real CLI in a child process (tests/cli_server.py) with
``TRANSFERKIT_TEST_KILL_AT="<point>:<n>"``, so the child kills itself with SIGKILL the n-th time it
reaches ``transferkit.io.kill_point("<point>")`` (a deterministic place: after a feature chunk, a
checkpoint rename, an optimizer step, with an atomic temporary complete but not renamed...).
Then it checks that

- every file visible under its final name is complete and loads (temporaries are never read);
- the same command (``fit`` with ``--resume``) succeeds afterwards;
- its results equal an uninterrupted run's: feature arrays exactly, ``fit``'s scored metrics and
  model weights exactly (``linear``, and ``partial`` with ``--epochs 2 --precision fp32`` on CPU).

The default suite runs a few points of each command; ``-m slow`` runs all of them.
Reproduce: ``.venv/bin/pytest tests/test_interruptions.py -m "slow or not slow" -s``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import make_image_folder
from safetensors.torch import load_file

KILL = "TRANSFERKIT_TEST_KILL_AT"
COMMON = ("--precision", "fp32", "--device", "cpu", "--quiet")

# (point, what is on disk when it fires); "<point>@<text>:<n>" counts only writes of files whose
# name contains <text>. extract: 3 layers x 3 chunks of 256 images (540 images), --out export.h5.
EXTRACT_POINTS = [
    ("atomic.before_replace@layout.json:1", "first layout.json complete as a temporary, not renamed"),
    ("atomic.after_replace@layout.json:3", "every layer's layout.json, nothing decoded"),
    ("atomic.before_replace@decoded-:1", "decode cache complete as a temporary, not renamed"),
    ("atomic.after_replace@decoded-:1", "decode cache in place, no chunk yet"),
    ("atomic.after_replace@0000000000-0000000256.npy:2", "chunk 1 written for two layers, not the third"),
    ("features.chunk:1", "chunk 1 of every layer"),
    ("atomic.before_replace@0000000256-0000000512.npy:2", "chunk 2 of a layer complete as a temporary"),
    ("features.chunk:2", "chunks 1-2 of every layer"),
    ("features.chunk:3", "every chunk, nothing consolidated"),
    ("atomic.before_replace@.h5:1", "first final .h5 complete as a temporary"),
    ("features.consolidated:1", "first layer final, its chunks not yet removed"),
    ("features.consolidated:3", "every layer final, last chunk folder still there"),
    ("atomic.before_replace@export.h5:1", "--out file complete as a temporary"),
]
EXTRACT_QUICK = {"atomic.before_replace@decoded-:1", "features.chunk:2", "features.consolidated:1"}

# fit partial: --epochs 2 --batch-size 4, 8 optimizer steps per epoch; the head starts from a
# linear probe on stored features. fit linear: features, then the logistic regression.
FIT_POINTS = [
    ("partial", "atomic.after_replace@versions.json:1", "run config written, nothing else"),
    ("partial", "features.consolidated:1", "probe features for the head stored, chunks not removed"),
    ("partial", "atomic.before_replace@decoded-:1", "a decode cache complete as a temporary"),
    ("partial", "engine.step:3", "mid epoch 1, no checkpoint"),
    ("partial", "engine.checkpoint.tmp_written:1", "epoch 1 checkpoint complete under its temporary name"),
    ("partial", "engine.checkpoint.renamed:1", "epoch_0001 in place, latest.json not written"),
    ("partial", "engine.epoch_end:1", "epoch 1 checkpointed, history written"),
    ("partial", "engine.step:11", "mid epoch 2"),
    ("partial", "engine.checkpoint.renamed:2", "epoch_0002 in place, latest.json still names epoch 1"),
    ("partial", "engine.epoch_end:2", "trained, model not written"),
    ("partial", "atomic.before_replace@model.safetensors:1", "model weights complete as a temporary"),
    ("partial", "atomic.after_replace@model.json:1", "model written, history and metrics not"),
    ("partial", "atomic.before_replace@metrics.json:1", "metrics.json complete as a temporary"),
    ("linear", "features.chunk:1", "features in chunks, not consolidated"),
    ("linear", "features.consolidated:1", "final feature file in place, chunks not removed"),
    ("linear", "atomic.after_replace@model.safetensors:1", "model weights written, model.json and metrics not"),
]
FIT_QUICK = {("partial", "engine.step:3"), ("partial", "engine.checkpoint.renamed:1"),
             ("linear", "features.consolidated:1")}


def _params(points, quick, key):
    return [pytest.param(*p, id=":".join(p[:-1]), marks=() if key(p) in quick else pytest.mark.slow) for p in points]


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    """540 tiny images: three chunks of 256 in the feature store."""
    return make_image_folder(tmp_path_factory.mktemp("many"), per_class=180, size=8, seed=3)


def extract_args(data: Path, card: Path, cache: Path, out: Path) -> list[str]:
    return ["extract", str(data), "-b", str(card), "--layers", "stem,stage1,pool", "--batch-size", "4",
            "--cache-dir", str(cache), "--out", str(out), *COMMON]


def fit_args(strategy: str, data: Path, card: Path, cache: Path, run: Path) -> list[str]:
    extra = ["--epochs", "2", "--batch-size", "4"] if strategy == "partial" else []
    return ["fit", str(data), "-b", str(card), "--strategy", strategy, *extra, "--cache-dir", str(cache),
            "--out", str(run), *COMMON]


def ok(result) -> None:
    assert result.rc == 0, f"exit {result.rc}\nstdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def extract_ref(cli, tiny_card, many_images, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("extract_ref")
    ok(cli.run(*extract_args(many_images, tiny_card, root / "cache", root / "export.h5")))
    return root


@pytest.fixture(scope="module")
def fit_refs(cli, tiny_card, tiny_folder, tmp_path_factory) -> dict[str, Path]:
    refs = {}
    for strategy in ("partial", "linear"):
        root = tmp_path_factory.mktemp(f"fit_ref_{strategy}")
        ok(cli.run(*fit_args(strategy, tiny_folder, tiny_card, root / "cache", root / "run")))
        refs[strategy] = root / "run"
    return refs


# ------------------------------------------------------------------------------ checks
def is_temporary(path: Path) -> bool:
    """What transferkit.io.atomic_path and the Checkpointer write before the rename."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def visible_files(root: Path) -> list[Path]:
    """Files under their final names (not inside a temporary checkpoint directory)."""
    return [p for p in root.rglob("*") if p.is_file() and not any(is_temporary(q) for q in (p, *p.parents))
            and not p.name.startswith(".")]


def assert_visible_files_complete(root: Path) -> int:
    """Every file a later run could read loads completely; returns how many were checked."""
    n = 0
    for p in visible_files(root):
        n += 1
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".h5":
            with h5py.File(p, "r") as f:
                if "features" in f and isinstance(f["features"], h5py.Dataset):  # a store file
                    assert bool(f.attrs["complete"]), p
                    assert f["features"].shape == (int(f.attrs["n"]), int(f.attrs["d"])), p
                    f["features"][...]
                else:  # an --out export
                    for ds in f["features"].values():
                        ds[...]
        elif p.suffix == ".npy":
            np.load(p, allow_pickle=False)  # reads the whole array: a short file raises
        elif p.suffix == ".safetensors":
            load_file(str(p))
        elif p.suffix == ".pt":
            torch.load(p, weights_only=True)
    return n


def store_arrays(cache: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted((cache / "features").glob("*.h5")):
        with h5py.File(p, "r") as f:
            out[p.name] = f["features"][...]
    return out


def assert_checkpoints_consistent(run: Path) -> None:
    ck = run / "checkpoints"
    if (ck / "latest.json").exists():
        latest = json.loads((ck / "latest.json").read_text())
        assert (ck / latest["dir"] / "meta.json").is_file(), "latest.json names a checkpoint that is not there"


def no_stray_partials(cache: Path) -> None:
    assert not list((cache / "features").glob("*.partial")), "a finished extraction left its chunk folder"


# ------------------------------------------------------------------------------ extract
@pytest.mark.parametrize(("point", "state"), _params(EXTRACT_POINTS, EXTRACT_QUICK, lambda p: p[0]))
def test_extract_killed_then_rerun_equals_uninterrupted(cli, tiny_card, many_images, extract_ref, tmp_path,
                                                        point, state):
    cache, out = tmp_path / "cache", tmp_path / "export.h5"
    args = extract_args(many_images, tiny_card, cache, out)
    killed = cli.run(*args, env={KILL: point})
    assert killed.killed, f"{point} ({state}) was not reached: exit {killed.rc}\n{killed.stderr[-3000:]}"
    assert_visible_files_complete(tmp_path)

    ok(cli.run(*args))
    ref = extract_ref
    with h5py.File(out, "r") as a, h5py.File(ref / "export.h5", "r") as b:
        assert sorted(a["features"]) == sorted(b["features"]) == ["pool", "stage1", "stem"]
        for layer in b["features"]:
            np.testing.assert_array_equal(a["features"][layer][...], b["features"][layer][...])
        np.testing.assert_array_equal(a["labels"][...], b["labels"][...])
    mine, theirs = store_arrays(cache), store_arrays(ref / "cache")
    assert mine.keys() == theirs.keys() and len(mine) == 3
    for k in theirs:
        np.testing.assert_array_equal(mine[k], theirs[k])
    no_stray_partials(cache)
    assert_visible_files_complete(tmp_path)
    # and a third run is a pure store hit
    again = cli.run(*args[:-1], "--json")
    ok(again)
    assert json.loads(again.stdout)["from_cache"] is True


# ------------------------------------------------------------------------------ fit
def assert_same_run(run: Path, ref: Path) -> None:
    a = json.loads((run / "metrics.json").read_text())["scored"]
    b = json.loads((ref / "metrics.json").read_text())["scored"]
    assert a["accuracy"] == b["accuracy"]
    assert a == b
    wa, wb = load_file(str(run / "model" / "model.safetensors")), load_file(str(ref / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wb:
        assert torch.equal(wa[k], wb[k]), k
    drop = ("seconds",)
    ha = [{k: v for k, v in h.items() if k not in drop} for h in json.loads((run / "history.json").read_text())]
    hb = [{k: v for k, v in h.items() if k not in drop} for h in json.loads((ref / "history.json").read_text())]
    assert ha == hb


@pytest.mark.parametrize(("strategy", "point", "state"), _params(FIT_POINTS, FIT_QUICK, lambda p: p[:2]))
def test_fit_killed_then_resume_equals_uninterrupted(cli, tiny_card, tiny_folder, fit_refs, tmp_path,
                                                     strategy, point, state):
    cache, run = tmp_path / "cache", tmp_path / "run"
    args = fit_args(strategy, tiny_folder, tiny_card, cache, run)
    killed = cli.run(*args, env={KILL: point})
    assert killed.killed, f"{point} ({state}) was not reached: exit {killed.rc}\n{killed.stderr[-3000:]}"
    assert_visible_files_complete(tmp_path)
    assert_checkpoints_consistent(run)

    ok(cli.run(*args, "--resume"))
    assert_same_run(run, fit_refs[strategy])
    assert_visible_files_complete(tmp_path)
    assert_checkpoints_consistent(run)
    no_stray_partials(cache)
    if strategy == "partial":
        ck = run / "checkpoints"
        assert json.loads((ck / "latest.json").read_text())["epoch"] == 2
        assert sorted(p.name for p in ck.iterdir() if not is_temporary(p)) == ["epoch_0002", "latest.json"]


def test_sweep_tables_name_real_kill_points():
    """The sweep tables themselves: each point is listed once, is ``name[@text]:n`` with n >= 1, names a
    ``kill_point("name")`` that exists in src/transferkit, and the quick subsets (what the default suite
    runs) name defined points, so a rename in src or a typo here cannot silently drop a point.

    That each point is reached and gives the uninterrupted result is asserted by the parametrised
    tests above, one per point (``killed.killed``, then ``assert_same_run`` / the array comparisons).
    """
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "transferkit"
    defined = set(re.findall(r'kill_point\(\s*"([^"]+)"', "\n".join(p.read_text() for p in src.rglob("*.py"))))
    points = [p[0] for p in EXTRACT_POINTS] + [p[1] for p in FIT_POINTS]
    for point in points:
        m = re.fullmatch(r"([a-z_.]+)(?:@([^:]+))?:([0-9]+)", point)
        assert m and int(m.group(3)) >= 1, f"{point!r} is not name[@text]:n"
        assert m.group(1) in defined, f"{point!r}: no kill_point({m.group(1)!r}) in {src}; defined: {sorted(defined)}"
    extract = [p[0] for p in EXTRACT_POINTS]
    fit = [p[:2] for p in FIT_POINTS]
    assert len(set(extract)) == len(extract) and len(set(fit)) == len(fit), "a kill point is listed twice"
    assert EXTRACT_QUICK <= set(extract), EXTRACT_QUICK - set(extract)
    assert FIT_QUICK <= set(fit), FIT_QUICK - set(fit)
    assert {s for s, _ in FIT_QUICK} == {s for s, _ in fit} == {"partial", "linear"}  # the refs fit_refs builds


@pytest.mark.slow  # two fresh interpreters: 20-60 s of imports on the shared machine
def test_exec_console_entry_point_sigkill_and_resume(tiny_card, tiny_folder, tmp_path, fit_refs):
    """Once through a freshly exec'd ``python -m transferkit.cli`` (no fork server), kill and resume."""
    cache, run = tmp_path / "cache", tmp_path / "run"
    args = [sys.executable, "-m", "transferkit.cli", *fit_args("partial", tiny_folder, tiny_card, cache, run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    killed = subprocess.run(args, env={**env, KILL: "engine.checkpoint.tmp_written:2"}, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(run, fit_refs["partial"])
