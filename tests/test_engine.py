"""The Fabric training loop: config validation, freezing, BN policy, determinism, checkpoints,
resume after SIGKILL (bit-exact on CPU), divergence, OOM back-off, early stopping."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from transferkit.engine import (
    ArrayData,
    TrainConfig,
    WarmupCosine,
    apply_bn_policy,
    fit_network,
    network_groups,
    set_frozen,
)
from transferkit.errors import ConfigError, TrainingDivergedError

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_data(n: int, seed: int, size: int = 16, classes: int = 3) -> ArrayData:
    """Noisy images whose class is their dominant colour channel."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 120, (n, 3, size, size))
    x[np.arange(n), y] += 100
    return ArrayData(x.clip(0, 255).astype(np.uint8), y)


def tiny_net(num_classes: int = 3, seed: int = 0):
    from transferkit.backbones import load_backbone
    from transferkit.backbones.smallcnn import register_smallcnn

    register_smallcnn()
    return load_backbone("tk_smallcnn", pretrained=False, seed=seed).build_network(num_classes)


def state(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


FAST = dict(batch_size=16, lr=3e-3, precision="32-true", seed=0)


# ------------------------------------------------------------------------------------- config
def test_config_messages():
    with pytest.raises(
        ConfigError,
        match=r"The 'optimizer' parameter must be one of \{'adamw','sgd'\}. "
        r"Got 'adam' instead.",
    ):
        TrainConfig(optimizer="adam")
    with pytest.raises(ConfigError, match="'epochs' parameter must be an integer >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="'lr' parameter"):
        TrainConfig(lr=-1)
    with pytest.raises(ConfigError, match="'bn_policy'"):
        TrainConfig(bn_policy="sometimes")
    with pytest.raises(ConfigError, match="'precision'"):
        TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="head_epochs"):
        TrainConfig(epochs=2, head_epochs=2)
    with pytest.raises(ConfigError, match="either"):
        TrainConfig(freeze_stages=1, freeze_until="stage1")
    with pytest.raises(ConfigError, match="'flip'"):
        TrainConfig(flip="no")
    assert TrainConfig(precision="bf16").precision == "bf16-mixed"


def test_frozen_groups_is_a_function_of_the_epoch():
    names = ["stem", "stage1", "stage2", "stage3", "top", "head"]
    cfg = TrainConfig(epochs=5, freeze_stages=2)
    assert cfg.frozen_groups(names, 0) == ["stem", "stage1", "stage2"]
    assert cfg.frozen_groups(names, 4) == ["stem", "stage1", "stage2"]
    full = TrainConfig(epochs=5, head_epochs=2)
    assert full.frozen_groups(names, 1) == ["stem", "stage1", "stage2", "stage3", "top"]
    assert full.frozen_groups(names, 2) == []
    assert TrainConfig(freeze_until="stem").frozen_groups(names, 0) == ["stem"]
    with pytest.raises(ConfigError, match="'freeze_until' parameter must be one of"):
        TrainConfig(freeze_until="layer9").frozen_groups(names, 0)
    with pytest.raises(ConfigError, match="between 0 and 3"):
        TrainConfig(freeze_stages=4).frozen_groups(names, 0)


def test_warmup_cosine():
    f = WarmupCosine(total=10, warmup=2)
    assert f(0) == pytest.approx(1 / 3) and f(1) == pytest.approx(2 / 3)
    assert f(2) == pytest.approx(1.0) and f(10) == pytest.approx(0.0)
    g = WarmupCosine(total=10, warmup=0, start=4)
    assert g(3) == 0.0 and g(4) == 1.0


def test_bn_policy_keeps_frozen_batchnorm_in_eval():
    net = tiny_net()
    groups = network_groups(net)
    set_frozen(groups, ["stem", "stage1"])
    net.train()
    apply_bn_policy(net, "frozen")
    assert not net.body.stem.bn.training and not net.body.stages[0].conv1.bn.training
    assert net.body.stages[1].conv1.bn.training
    net.train()
    apply_bn_policy(net, "train")
    assert net.body.stem.bn.training


# ----------------------------------------------------------------------------------- training
def test_trains_partial_freezes_and_is_deterministic(tmp_path):
    train, val = make_data(48, 0), make_data(24, 1)
    cfg = TrainConfig(epochs=2, freeze_stages=1, **FAST)
    runs = []
    for i in range(2):
        net = tiny_net()
        before = state(net)
        hist: list = []
        res = fit_network(
            net,
            train,
            val,
            cfg,
            tmp_path / f"r{i}",
            monitor=make_data(12, 2),
            progress=False,
            device="cpu",
            history=hist,
        )
        after = state(net)
        runs.append((hist, after))
        # stem + stage1 frozen: weights AND BatchNorm running statistics unchanged
        for k in before:
            if k.startswith(("body.stem.", "body.stages.0.")):
                assert torch.equal(before[k], after[k]), k
        assert not torch.equal(before["body.stages.2.conv2.conv.weight"], after["body.stages.2.conv2.conv.weight"])
        assert res.epochs_run == 2 and len(hist) == 2
        assert set(hist[0]) >= {"train_loss", "train_acc", "val_loss", "val_acc", "monitor_acc", "lr", "seconds"}
        assert json.loads((tmp_path / f"r{i}" / "history.json").read_text())[-1]["epoch"] == 2
    (h0, w0), (h1, w1) = runs
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in h0]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in h1]
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_checkpoint_state_loads_weights_only(tmp_path):
    for opt in ("adamw", "sgd"):
        cfg = TrainConfig(epochs=1, optimizer=opt, augment=False, **FAST)
        fit_network(tiny_net(), make_data(32, 0), None, cfg, tmp_path / opt, progress=False, device="cpu")
        ck = tmp_path / opt / "checkpoints"
        latest = json.loads((ck / "latest.json").read_text())["dir"]
        st = torch.load(ck / latest / "state.pt", weights_only=True)
        assert st["optimizer"]["state"] and st["optimizer"]["param_groups"][-1]["name"] == "head"
        meta = json.loads((ck / latest / "meta.json").read_text())
        assert [g["name"] for g in meta["param_groups"]] == ["stem", "stage1", "stage2", "stage3", "head"]


def test_resume_after_crash_keeps_frozen_layers_frozen(tmp_path):
    train, val = make_data(48, 0), make_data(24, 1)
    cfg = TrainConfig(epochs=2, freeze_stages=1, **FAST)
    net = tiny_net()
    init = state(net)

    def crash(epoch, batch):
        if epoch == 1 and batch == 1:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        fit_network(net, train, val, cfg, tmp_path, progress=False, device="cpu", _fault=crash)
    net2 = tiny_net(seed=5)  # different init: everything must come from the checkpoint
    res = fit_network(net2, train, val, cfg, tmp_path, progress=False, device="cpu", resume=True)
    assert res.resumed_from == 1 and res.epochs_run == 2 and len(res.history) == 2
    after = state(net2)
    for k in init:
        if k.startswith(("body.stem.", "body.stages.0.")):
            assert torch.equal(init[k], after[k]), k
    ref = tiny_net()
    ref_res = fit_network(ref, train, val, cfg, tmp_path / "ref", progress=False, device="cpu")
    assert [h["train_loss"] for h in res.history] == [h["train_loss"] for h in ref_res.history]
    assert all(torch.equal(after[k], v) for k, v in state(ref).items())


def test_divergence_names_epoch_and_keeps_checkpoint(tmp_path):
    net = tiny_net()

    def poison(epoch, batch):
        if epoch == 1 and batch == 0:
            with torch.no_grad():
                net.head.bias.fill_(float("nan"))

    cfg = TrainConfig(epochs=3, **FAST)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, optimizer step \d+.*Lower the learning rate"):
        fit_network(net, make_data(32, 0), None, cfg, tmp_path, progress=False, device="cpu", _fault=poison)
    assert (tmp_path / "checkpoints" / "epoch_0001" / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoints" / "epoch_0002").exists()


def test_oom_halves_the_micro_batch(tmp_path):
    net = tiny_net()

    def fake_oom(_module, args):
        if args[0].shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    handle = net.body.register_forward_pre_hook(fake_oom)
    cfg = TrainConfig(epochs=1, augment=False, **FAST)
    res = fit_network(net, make_data(32, 0), None, cfg, tmp_path, progress=False, device="cpu")
    handle.remove()
    oom = [e for e in res.events if "out of memory" in e]
    assert len(oom) == 2 and "gradient accumulation x4" in oom[-1]
    assert np.isfinite(res.history[0]["train_loss"])


def test_cpu_splits_large_batches_into_micro_batches_with_the_same_gradients(tmp_path, monkeypatch):
    import transferkit.engine as engine
    import transferkit.engine.loop as loop

    cfg = TrainConfig(epochs=1, augment=False, **{**FAST, "batch_size": 32, "bn_policy": "eval"})
    split_net, whole_net = tiny_net(), tiny_net()
    res = fit_network(split_net, make_data(64, 0), None, cfg, tmp_path / "split", progress=False, device="cpu")
    assert any("2 micro-batches of at most 16" in e for e in res.events)
    monkeypatch.setattr(loop, "CPU_MICRO_BATCH", 64)  # where the loop reads it
    res = fit_network(whole_net, make_data(64, 0), None, cfg, tmp_path / "whole", progress=False, device="cpu")
    assert not any("micro-batches" in e for e in res.events)
    a, b = state(split_net), state(whole_net)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    assert engine.cpu_micro_splits(32, torch.device("cuda")) == 1


def test_early_stopping_restores_best(tmp_path):
    cfg = TrainConfig(epochs=6, early_stopping_patience=1, **{**FAST, "lr": 1e-9})
    res = fit_network(tiny_net(), make_data(32, 0), make_data(12, 1), cfg, tmp_path, progress=False, device="cpu")
    assert res.stopped_early and res.epochs_run < 6 and res.best_epoch == res.epochs_run - 1
    accs = [h["val_acc"] for h in res.history]
    assert res.best_val_acc == max(accs) == accs[res.best_epoch - 1]
    assert all(a <= res.best_val_acc for a in accs[res.best_epoch:])  # nothing after it beat it


def test_the_starting_network_is_a_candidate_so_fine_tuning_never_ends_below_it(tmp_path):
    """A well-started network fine-tuned on wrong labels: with the start as a candidate the run ends
    with the starting weights (epoch 0); without it, with the damaged ones."""
    net = tiny_net()
    # BatchNorm in eval mode throughout, so the few steps here leave train and eval modes consistent.
    fit_network(net, make_data(96, 0), None, TrainConfig(epochs=8, bn_policy="eval", **FAST), tmp_path / "pre",
                progress=False, device="cpu")
    start = state(net)
    train, val = make_data(48, 2), make_data(24, 1)
    wrong = ArrayData(train.images, (train.labels + 1) % 3)  # fine-tuning data that teaches the wrong mapping
    cfg = TrainConfig(epochs=3, augment=False, bn_policy="eval", **FAST)

    net.load_state_dict(start)
    kept = fit_network(net, wrong, val, cfg, tmp_path / "kept", progress=False, device="cpu", start_candidate=True)
    assert kept.best_epoch == 0 and kept.best_val_acc == kept.start_val_acc > max(h["val_acc"] for h in kept.history)
    assert all(torch.equal(v, start[k]) for k, v in state(net).items())

    net.load_state_dict(start)
    moved = fit_network(net, wrong, val, cfg, tmp_path / "moved", progress=False, device="cpu")
    assert moved.best_epoch >= 1 and moved.start_val_acc is None and moved.best_val_acc < kept.best_val_acc


def test_a_given_start_is_replaced_only_by_an_epoch_beating_it_measurably(tmp_path):
    """A StartCandidate (weights other than the trained ones, with the caller's score): the run ends with
    its weights unless an epoch beats its score by 1.645 standard errors (one-sided 95%) on the selection
    images."""
    from transferkit.engine import StartCandidate

    net = tiny_net()
    other = tiny_net(seed=1)
    train, val = make_data(48, 0), make_data(24, 1)
    cfg = TrainConfig(epochs=2, augment=False, bn_policy="eval", **FAST)
    moved = fit_network(tiny_net(), train, val, cfg, tmp_path / "free", progress=False, device="cpu")
    top = max(h["val_acc"] for h in moved.history)
    se = math.sqrt(max(top * (1 - top), 1 / 24) / 24)
    # one standard error under the best epoch: not measurably beaten, so the start is the model
    start = StartCandidate(state=state(other), score=top - se, source="test", n_val=24)
    kept = fit_network(net, train, val, cfg, tmp_path / "kept", progress=False, device="cpu", start_candidate=start)
    assert [h["val_acc"] for h in kept.history] == [h["val_acc"] for h in moved.history]  # the same training
    assert kept.best_epoch == 0 and kept.start_val_acc == kept.best_val_acc == pytest.approx(top - se)
    assert all(torch.equal(v, start.state[k]) for k, v in state(net).items())
    # scored well under it: the best epoch wins
    low = StartCandidate(state=state(other), score=top - 3 * se, source="test", n_val=24)
    won = fit_network(tiny_net(), train, val, cfg, tmp_path / "won", progress=False, device="cpu", start_candidate=low)
    assert won.best_epoch >= 1 and won.best_val_acc == top


def test_bf16_autocast_trains(tmp_path):
    from transferkit.runtime import training_precision

    if training_precision("auto", "cpu") != "bf16-mixed":
        pytest.skip("this CPU has no native bf16")
    cfg = TrainConfig(epochs=1, **{**FAST, "precision": "auto"})
    res = fit_network(tiny_net(), make_data(32, 0), None, cfg, tmp_path, progress=False, device="cpu")
    assert res.precision == "bf16-mixed" and np.isfinite(res.history[0]["train_loss"])


def test_strided_depthwise_runs_fp32_under_cpu_bf16_and_is_restored():
    from torch import nn

    from transferkit.runtime import fp32_strided_depthwise

    torch.manual_seed(0)
    dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
    dw1 = nn.Conv2d(8, 8, 3, stride=1, padding=1, groups=8)  # not strided: stays bf16
    pw = nn.Conv2d(8, 4, 1)
    net = nn.Sequential(dw, dw1, pw)
    keys = list(net.state_dict())
    dtypes: dict[str, torch.dtype] = {}
    for name, m in (("dw", dw), ("dw1", dw1), ("pw", pw)):
        m.register_forward_hook(lambda _m, _i, out, name=name: dtypes.__setitem__(name, out.dtype))
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    with fp32_strided_depthwise(net) as patched:
        assert patched == 1 and list(net.state_dict()) == keys
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(x).float().sum().backward()
        assert dtypes == {"dw": torch.float32, "dw1": torch.bfloat16, "pw": torch.bfloat16}
        assert dw.weight.grad is not None and dw.weight.grad.dtype == torch.float32
    assert "forward" not in dw.__dict__  # the class's forward again
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(x)
    assert dtypes["dw"] == torch.bfloat16
    with fp32_strided_depthwise(net, enabled=False) as patched:
        assert patched == 0


# --------------------------------------------------------------------- resume after SIGKILL
CHILD = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from test_engine import make_data, tiny_net
    from transferkit.engine import TrainConfig, fit_network
    run_dir, mode = sys.argv[1], sys.argv[2]
    cfg = TrainConfig(epochs=3, head_epochs=1, batch_size=16, lr=3e-3, precision="32-true", seed=0)
    def fault(epoch, batch):
        if mode == "kill" and epoch == 2 and batch == 1:
            open(run_dir + "/.killme", "w").close()
            time.sleep(600)
    net = tiny_net()
    fit_network(net, make_data(48, 0), make_data(24, 1), cfg, run_dir, monitor=make_data(12, 2),
                progress=False, device="cpu", resume=(mode == "resume"), _fault=fault)
    from safetensors.torch import save_file
    save_file({{k: v.contiguous() for k, v in net.state_dict().items()}}, run_dir + "/final.safetensors")
""")


def _child(tmp_path: Path, *args: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(REPO / "tests")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(script), *args], env=env)


@pytest.mark.slow  # three child processes (~60-150 s on 2 shared cores)
def test_sigkill_mid_epoch_then_resume_is_bit_exact_and_keeps_body_unfrozen(tmp_path):
    from safetensors.torch import load_file

    run, ref = tmp_path / "run", tmp_path / "ref"
    run.mkdir()
    ref.mkdir()
    proc = _child(tmp_path, str(run), "kill")
    deadline = time.time() + 240
    while not (run / ".killme").exists():
        assert proc.poll() is None, "training child exited before the kill point"
        assert time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert latest["epoch"] == 2  # epochs 1 (head only) and 2 (all layers) completed, 3 was running
    meta2 = json.loads((run / "checkpoints" / "epoch_0002" / "meta.json").read_text())
    assert meta2["frozen_groups"] == []
    ck2 = load_file(str(run / "checkpoints" / "epoch_0002" / "model.safetensors"))
    assert _child(tmp_path, str(run), "resume").wait() == 0
    assert _child(tmp_path, str(ref), "plain").wait() == 0

    hist_run = json.loads((run / "history.json").read_text())
    hist_ref = json.loads((ref / "history.json").read_text())
    assert [h["epoch"] for h in hist_run] == [1, 2, 3]
    assert [h["frozen"] for h in hist_run] == ["stem,stage1,stage2,stage3", "", ""]
    drop = ("seconds",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in hist_run] == [
        {k: v for k, v in h.items() if k not in drop} for h in hist_ref
    ]  # bit-exact metrics
    a, b = load_file(str(run / "final.safetensors")), load_file(str(ref / "final.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)  # bit-exact weights
    meta = json.loads((run / "checkpoints" / "epoch_0003" / "meta.json").read_text())
    assert meta["frozen_groups"] == []
    lrs = {g["name"]: g["lr"] for g in meta["param_groups"]}
    assert lrs["head"] == pytest.approx(3e-3) and lrs["stage2"] == pytest.approx(3e-4)
    last = load_file(str(run / "checkpoints" / "epoch_0003" / "model.safetensors"))
    assert not torch.equal(ck2["body.stem.conv.weight"], last["body.stem.conv.weight"])  # body trained in epoch 3
