"""The same fit under torchrun with 2 processes (DDP, gloo on CPU) and in one process.

Per-rank batch = batch_size / world_size, so the global batch (and the number of optimizer
steps) is the same in both runs; the data order and BatchNorm statistics differ (each rank
normalises over its half batch), so results agree within a tolerance, not bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.05  # val accuracy, absolute (5 points) on an easy synthetic 3-class task

SCRIPT = textwrap.dedent("""
    import json, os, sys, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from test_engine import make_data, tiny_net
    from transferkit.engine import TrainConfig, fit_network
    out = sys.argv[1]
    cfg = TrainConfig(epochs=5, head_epochs=1, batch_size=16, lr=1e-2, precision="32-true", seed=0)
    net = tiny_net()
    res = fit_network(net, make_data(96, 0), make_data(48, 1), cfg, out, progress=False, device="cpu")
    if int(os.environ.get("RANK", "0")) == 0:
        json.dump({{"world": int(os.environ.get("WORLD_SIZE", "1")), "history": res.history,
                   "best_val_acc": res.best_val_acc}}, open(out + "/result.json", "w"))
""")


@pytest.mark.slow  # two torchrun workers + one plain process: ~1-2 min on 2 shared cores
def test_ddp_two_processes_matches_single_process(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT.format(tests=str(REPO / "tests")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir()
    single.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(ddp)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, str(script), str(single)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((ddp / "result.json").read_text())
    b = json.loads((single / "result.json").read_text())
    assert a["world"] == 2 and b["world"] == 1
    assert len(a["history"]) == len(b["history"]) == 5
    assert a["history"][-1]["train_acc"] > 0.6  # it trains
    assert abs(a["best_val_acc"] - b["best_val_acc"]) <= TOLERANCE, (a["best_val_acc"], b["best_val_acc"])
    # only rank 0 wrote files; one set of checkpoints
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["epoch_0005", "latest.json"]
    print(f"DDP best val acc {a['best_val_acc']:.3f} vs single {b['best_val_acc']:.3f}")
