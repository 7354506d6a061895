"""``transferkit extract`` under torchrun with 2 CPU processes (gloo) writes the store a single
process writes: same files (same keys), identical arrays; and an interrupted 2-process run resumes.

The 2-process runs use 4-image chunks (14 chunks for 54 images, 7 per rank) and the reference
run the default chunk size: with the same batch size every image is in the same batch either way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": path, **extra}


def _extract(data: Path, card: Path, cache: Path, *, procs: int, extra=(), env=None) -> subprocess.CompletedProcess:
    args = ["extract", str(data), "-b", str(card), "--layers", "stage2,pool", "--batch-size", "2",
            "--device", "cpu", "--cache-dir", str(cache), "--json", "-q", *extra]
    launcher = [sys.executable, "-m", "transferkit.cli"]
    if procs > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
                    "-m", "transferkit.cli"]
    return subprocess.run(launcher + args, env=env or _env(), capture_output=True, text=True, timeout=600)


def _store(cache: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted((cache / "features").glob("*.h5")):
        with h5py.File(path, "r") as f:
            assert f.attrs["key"] == path.stem and bool(f.attrs["complete"])
            out[path.name] = f["features"][...]
    return out


def test_two_process_extraction_equals_single_process(tmp_path, tiny_card, tiny_folder):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    r = _extract(tiny_folder, tiny_card, single, procs=1, extra=["--out", str(tmp_path / "single.h5")])
    assert r.returncode == 0, r.stderr[-3000:]
    reference = _store(single)
    assert len(reference) == 2 and all(a.shape[0] == 54 for a in reference.values())

    # Interrupted: every rank SIGKILLs itself after its second chunk is on disk.
    r = _extract(tiny_folder, tiny_card, ddp, procs=2, extra=["--chunk-size", "4"],
                 env=_env(TRANSFERKIT_TEST_KILL_AT="features.chunk:2"))
    assert r.returncode != 0
    partial = list((ddp / "features").glob("*.partial"))
    assert len(partial) == 2 and not _store(ddp)
    done_before = {p.name for p in partial[0].glob("*.npy")}
    # Round-robin: rank 0 computes chunks 0, 2, 4, ..., rank 1 chunks 1, 3, ...; the first rank to
    # die had written its second chunk (images 8..11 or 12..15), which one process would reach 8th.
    first_four = {f"{s:010d}-{s + 4:010d}.npy" for s in (0, 4, 8, 12)}
    assert done_before <= first_four and done_before & {"0000000008-0000000012.npy", "0000000012-0000000016.npy"}
    # A sharded run decodes chunk by chunk: it leaves no decode cache (nor W temporary copies of it).
    assert not (ddp / "decoded").exists() or not any((ddp / "decoded").iterdir())

    # Resumed, now with the single run's (complete) decode cache to read from.
    shutil.copytree(single / "decoded", ddp / "decoded")
    r = _extract(tiny_folder, tiny_card, ddp, procs=2, extra=["--chunk-size", "4", "--out", str(tmp_path / "ddp.h5")])
    assert r.returncode == 0, r.stderr[-3000:]
    summaries = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["processes"] == 2  # rank 0 alone reports
    assert summaries[0]["n_images"] == 54 and sorted(summaries[0]["layers"]) == ["pool", "stage2"]

    got = _store(ddp)
    assert sorted(got) == sorted(reference)  # same keys
    for name, arr in reference.items():
        assert arr.dtype == got[name].dtype and np.array_equal(arr, got[name]), name
    assert not list((ddp / "features").glob("*.partial")) and not list((ddp / "features").glob(".*tmp"))
    with h5py.File(tmp_path / "single.h5", "r") as a, h5py.File(tmp_path / "ddp.h5", "r") as b:
        for layer in ("stage2", "pool"):
            assert np.array_equal(a["features"][layer][...], b["features"][layer][...])
