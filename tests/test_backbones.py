"""Fast tests of transferkit.backbones: tiny random-init models on small inputs, files in tmp_path."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from transferkit.backbones import (
    Backbone,
    Preprocessing,
    TransferNet,
    available_backbones,
    load_backbone,
    save_backbone_dir,
)
from transferkit.errors import BackboneError, ConfigError, UnsafeFileError, WeightsNotFoundError

torch.set_num_threads(2)

# name -> expected cut points (name, channels, reduction) for the archs the contract singles out
EXPECTED = {
    "mobilenetv1_075": [("stem", 24, 2), ("stage1", 48, 2), ("stage2", 96, 4), ("stage3", 192, 8),
                        ("stage4", 384, 16), ("stage5", 768, 32), ("pool", 768, 32)],
    "mobilenetv2_035": [("stem", 16, 2), ("stage1", 8, 2), ("stage2", 8, 4), ("stage3", 16, 8),
                        ("stage4", 32, 16), ("stage5", 112, 32), ("pool", 1280, 32)],
    "resnet18": [("stem", 64, 2), ("stage1", 64, 4), ("stage2", 128, 8), ("stage3", 256, 16),
                 ("stage4", 512, 32), ("pool", 512, 32)],
    "alexnet": [("stem", 64, 4), ("stage1", 192, 8), ("stage2", 384, 16), ("stage3", 256, 16),
                ("stage4", 256, 32), ("pool", 4096, 32)],
    "googlenet": [("stem", 192, 4), ("stage1", 480, 8), ("stage2", 832, 16), ("stage3", 1024, 32),
                  ("pool", 1024, 32)],
}

_CACHE: dict[str, Backbone] = {}


def random_backbone(arch: str) -> Backbone:
    """One random-init backbone per arch per test session (building alexnet/googlenet is not free)."""
    if arch not in _CACHE:
        _CACHE[arch] = load_backbone(arch, pretrained=False, seed=0)
    return _CACHE[arch]


def images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def write_card(folder: Path, arch: str, weights: str | None, **fields) -> Path:
    card = {"name": f"test-{arch}", "architecture": arch, "model_kwargs": {}, "weights": weights,
            "num_classes": 0, "input_size": [3, 32, 32], "interpolation": "bilinear",
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], **fields}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{arch}.json"
    path.write_text(json.dumps(card))
    return path


def state_equal(a: nn.Module | dict, b: nn.Module | dict) -> bool:
    sa = a.state_dict() if isinstance(a, nn.Module) else a
    sb = b.state_dict() if isinstance(b, nn.Module) else b
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------ names
def test_mobilenetv1_075_is_registered_with_timm():
    import timm

    m = timm.create_model("mobilenetv1_075", num_classes=0)
    assert m.num_features == 768
    assert m.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and m.pretrained_cfg["interpolation"] == "bilinear"
    assert timm.is_model("tk_smallcnn")  # transferkit's pretrain target, registered by the same call


def test_random_init_is_seeded_and_hash_names_arch_and_seed():
    a = load_backbone("mobilenetv2_035", pretrained=False, seed=0)
    b = load_backbone("mobilenetv2_035", pretrained=False, seed=0)
    c = load_backbone("mobilenetv2_035", pretrained=False, seed=1)
    assert state_equal(a.model, b.model)
    assert not state_equal(a.model, c.model)
    assert a.weights_hash == b.weights_hash != c.weights_hash
    assert a.weights_hash.startswith("random-init-seed0") and c.weights_hash.startswith("random-init-seed1")
    assert random_backbone("mobilenetv1_075").weights_hash != a.weights_hash  # same seed, other arch
    assert not a.pretrained and not a.has_source_head and a.source_classes is None
    # timm's own preprocessing for a timm name without a card
    assert a.preprocessing.input_size == (3, 224, 224)
    assert a.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))


def test_unknown_architecture_lists_close_matches(tmp_path):
    with pytest.raises(BackboneError, match="resnet18"):
        load_backbone("resnet19", pretrained=False)
    card = write_card(tmp_path, "mobilenetv2_35", "w.safetensors")
    with pytest.raises(BackboneError, match="mobilenetv2_035"):
        load_backbone(card)
    # a card can only name registered architectures: nothing is imported or evaluated
    card = write_card(tmp_path / "evil", "os.system", "w.safetensors")
    with pytest.raises(BackboneError, match="Unknown architecture"):
        load_backbone(card)


# ------------------------------------------------------------------------------ cut points
@pytest.mark.parametrize("arch", list(EXPECTED))
def test_cut_points_match_tensor_shapes(arch):
    bb = random_backbone(arch)
    got = [(cp.name, cp.channels, cp.reduction) for cp in bb.cut_points]
    assert got == EXPECTED[arch]
    assert bb.num_features == EXPECTED[arch][-1][1]

    # widths and strides measured independently with our own hooks at 128 x 128
    size, seen = 128, {}
    hooks = [cp.module.register_forward_hook(lambda m, a, o, n=cp.name: seen.__setitem__(n, o.shape))
             for cp in bb.cut_points if cp.name != "pool"]
    with torch.no_grad():
        bb.model(bb.normalize(images(1, size)))
    for h in hooks:
        h.remove()
    for cp in bb.cut_points[:-1]:
        assert seen[cp.name][1] == cp.channels, cp.name
        assert 2 ** round(math.log2(size / seen[cp.name][2])) == cp.reduction, cp.name

    feats = bb.forward_layers(images(2, 64), bb.layer_names)
    assert list(feats) == bb.layer_names
    for cp in bb.cut_points:
        assert feats[cp.name].shape == (2, cp.channels) and feats[cp.name].dtype == torch.float32
    grid = bb.forward_layers(images(2, 64), ["stage2"], pool=2)["stage2"]
    assert grid.shape == (2, bb.layer("stage2").channels * 4)


def test_layer_unknown_name_lists_valid_names():
    bb = random_backbone("resnet18")
    with pytest.raises(ConfigError, match="stem, stage1, stage2, stage3, stage4, pool"):
        bb.layer("layer3")
    with pytest.raises(ConfigError):
        bb.forward_layers(images(), ["stage9"])
    with pytest.raises(ConfigError, match="pool must be"):
        bb.forward_layers(images(), ["stem"], pool="max")


def test_forward_layers_stops_after_the_deepest_requested_layer():
    bb = random_backbone("resnet18")
    calls = []
    h = bb.layer("stage4").module.register_forward_hook(lambda *a: calls.append(1))
    try:
        out = bb.forward_layers(images(), ["stage1", "stem"])
        assert list(out) == ["stage1", "stem"] and not calls
        bb.forward_layers(images(), ["pool"])
        assert calls
    finally:
        h.remove()


def test_forward_layers_under_bf16_autocast_and_channels_last():
    bb = random_backbone("mobilenetv2_035")
    x = images(2, 64)
    ref = bb.forward_layers(x, ["stage3", "pool"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = bb.forward_layers(x.contiguous(memory_format=torch.channels_last), ["stage3", "pool"])
    for k in ref:
        assert got[k].dtype == torch.float32
        assert torch.allclose(got[k], ref[k], rtol=0.1, atol=0.1 * ref[k].abs().max().item())


def test_normalize_float_and_uint8_agree():
    bb = random_backbone("resnet18")
    x = images()
    assert torch.allclose(bb.normalize(x), bb.normalize(x.float()))
    with pytest.raises(ConfigError):
        bb.normalize(torch.zeros(2, 1, 8, 8))


# ---------------------------------------------------------------------------- param groups
@pytest.mark.parametrize("arch", ["mobilenetv1_075", "resnet18", "alexnet", "googlenet"])
def test_param_groups_partition_the_body(arch):
    bb = random_backbone(arch)
    groups = bb.param_groups()
    names = [g for g, _ in groups]
    assert names == [cp.name for cp in bb.cut_points if cp.name != "pool"] + ["top"]
    ids = [id(p) for _, ps in groups for p in ps]
    assert len(ids) == len(set(ids))
    classifier = {id(p) for p in bb.layer("pool").module.parameters()}
    assert set(ids) == {id(p) for p in bb.model.parameters()} - classifier
    assert all(len(ps) > 0 for g, ps in groups if g != "top")
    # module order: the stem's parameters are the network's first ones
    assert groups[0][1][0] is next(iter(bb.model.parameters()))

    net = bb.build_network(3)
    body_groups = net.backbone_groups()
    assert [g for g, _ in body_groups] == names
    assert [len(ps) for _, ps in body_groups] == [len(ps) for _, ps in groups]
    body_ids = [id(p) for _, ps in body_groups for p in ps]
    assert sorted(body_ids) == sorted(id(p) for p in net.body.parameters())


# ---------------------------------------------------------------------------- build_network
@pytest.mark.parametrize("arch", ["mobilenetv2_035", "alexnet", "googlenet"])
def test_build_network_forward(arch):
    bb = random_backbone(arch)
    net = bb.build_network(5)
    assert isinstance(net, TransferNet) and isinstance(net.head, nn.Linear)
    x = images(2, 64)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 5)
        assert torch.allclose(net(x.float()), y)
        f = net.forward_features(x)
    assert f.shape == (2, bb.num_features)
    assert torch.allclose(f, bb.forward_layers(x, ["pool"])["pool"], atol=1e-5)
    # the copy is independent of the backbone's model
    assert all(p1 is not p2 for p1, p2 in zip(net.body.parameters(), bb.model.parameters(), strict=False))


def test_build_network_mlp_head_and_validation():
    bb = random_backbone("mobilenetv2_035")
    net = bb.build_network(4, hidden=(32, 16), dropout=0.2)
    linears = [m for m in net.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1280, 32), (32, 16), (16, 4)]
    assert any(isinstance(m, nn.Dropout) for m in net.head) and any(isinstance(m, nn.ReLU) for m in net.head)
    net.train()
    assert net(images(2, 32)).shape == (2, 4)
    # deterministic head initialisation
    assert torch.equal(bb.build_network(4).head.weight, bb.build_network(4).head.weight)
    for bad in (dict(num_classes=0), dict(num_classes=2, hidden=(0,)), dict(num_classes=2, dropout=1.0)):
        with pytest.raises(ConfigError):
            bb.build_network(**bad)


def test_transfer_net_jit_trace_and_onnx_export(tmp_path):
    bb = random_backbone("mobilenetv2_035")
    net = bb.build_network(3).eval()
    x = images(2, 32)
    with torch.no_grad():
        ref = net(x)
        traced = torch.jit.trace(net, x, check_trace=False)
        assert torch.allclose(traced(x), ref, atol=1e-5)
        assert torch.allclose(traced(images(2, 32, seed=5)), net(images(2, 32, seed=5)), atol=1e-5)
    out = tmp_path / "net.onnx"
    torch.onnx.export(net, (x,), str(out), dynamo=False, input_names=["images"], output_names=["logits"])
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x.numpy()})[0]
    assert abs(got - ref.numpy()).max() < 1e-4


# -------------------------------------------------------------------------- cards and files
def test_card_loads_weights_and_its_preprocessing(tmp_path):
    ref = load_backbone("mobilenetv2_035", pretrained=False, seed=3)
    save_file({k: v.contiguous() for k, v in ref.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    card = write_card(tmp_path, "mobilenetv2_035", "w.safetensors", num_features=1280)
    bb = load_backbone(card)
    assert bb.pretrained and not bb.has_source_head and bb.num_features == 1280
    assert state_equal(bb.model, ref.model)
    assert bb.preprocessing == Preprocessing((3, 32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")
    # the card's mean/std (x/127.5 - 1), not timm's ImageNet defaults
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert torch.allclose(bb.normalize(x), torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2))
    assert not torch.allclose(bb.normalize(x), ref.normalize(x))
    assert bb.card()["mean"] == [0.5, 0.5, 0.5]
    assert bb.weights_hash != load_backbone(card).weights_hash.replace("a", "b")  # a real hex digest
    assert len(bb.weights_hash) == 64
    # random init with the card's architecture and preprocessing: the scratch baseline
    scratch = load_backbone(card, pretrained=False, seed=3)
    assert scratch.preprocessing == bb.preprocessing and scratch.weights_hash.startswith("random-init-seed3")


def test_card_num_features_mismatch_is_reported(tmp_path):
    ref = random_backbone("mobilenetv2_035")
    save_file({k: v.contiguous() for k, v in ref.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(BackboneError, match="num_features"):
        load_backbone(write_card(tmp_path, "mobilenetv2_035", "w.safetensors", num_features=999))


def test_timm_name_with_wrapped_pth_and_module_prefix(tmp_path):
    import timm

    torch.manual_seed(1)
    src = timm.create_model("mobilenetv2_035", num_classes=10)
    sd = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "ckpt.pth")
    bb = load_backbone("mobilenetv2_035", weights=tmp_path / "ckpt.pth")
    assert bb.num_classes == 10 and bb.has_source_head and bb.source_classes is None
    assert state_equal(bb.model, src.eval())
    x = images(2, 32)
    with torch.no_grad():
        assert torch.allclose(bb.source_logits(x), src(bb.normalize(x)), atol=1e-5)
    # {'model': ...} wrapper, no classifier in the file -> built without a head
    torch.save({"model": {k: v for k, v in src.state_dict().items() if not k.startswith("classifier.")}},
               tmp_path / "body.pt")
    body = load_backbone("mobilenetv2_035", weights=tmp_path / "body.pt")
    assert body.num_classes == 0 and not body.has_source_head
    with pytest.raises(BackboneError, match="no source classifier"):
        body.source_logits(x)


def test_strict_load_lists_missing_and_unexpected_keys(tmp_path):
    sd = dict(random_backbone("mobilenetv2_035").model.state_dict())
    sd.pop("conv_stem.weight")
    sd["extra.thing"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(BackboneError, match="conv_stem.weight") as ei:
        load_backbone("mobilenetv2_035", weights=tmp_path / "w.safetensors")
    assert "extra.thing" in str(ei.value) and "missing" in str(ei.value) and "unexpected" in str(ei.value)
    with pytest.raises(BackboneError, match="missing"):
        load_backbone("resnet18", weights=tmp_path / "w.safetensors")


class _Payload:
    """Unpickling this would create a marker file (stands in for arbitrary code execution)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, bad)
    assert not marker.exists()
    with pytest.raises(UnsafeFileError, match="weights_only=True"):
        load_backbone("mobilenetv2_035", weights=bad)
    assert not marker.exists()
    # through a card too
    (tmp_path / "c").mkdir()
    torch.save({"payload": _Payload(marker)}, tmp_path / "c" / "evil.pt")
    with pytest.raises(UnsafeFileError):
        load_backbone(write_card(tmp_path / "c", "mobilenetv2_035", "evil.pt"))
    assert not marker.exists()
    (tmp_path / "w.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(UnsafeFileError, match="safetensors"):
        load_backbone("mobilenetv2_035", weights=tmp_path / "w.pkl")


def test_card_weights_outside_its_folder_are_refused(tmp_path):
    ref = random_backbone("mobilenetv2_035")
    save_file({k: v.contiguous() for k, v in ref.model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    for weights in ("../w.safetensors", str(tmp_path / "w.safetensors"), "sub/../../w.safetensors"):
        card = write_card(tmp_path / "cards", "mobilenetv2_035", weights)
        with pytest.raises(UnsafeFileError, match="outside the card's folder"):
            load_backbone(card)
    bb = load_backbone(card, allow_outside_weights=True)
    assert state_equal(bb.model, ref.model)
    # source_classes follows the same rule
    card = write_card(tmp_path / "cards2", "mobilenetv2_035", "../w.safetensors", source_classes="/etc/passwd")
    with pytest.raises(UnsafeFileError):
        load_backbone(card, allow_outside_weights=False)


@pytest.mark.parametrize("bad", [
    {"model_kwargs": {"pretrained_cfg_overlay": {"file": "/tmp/x.pth"}}},
    {"model_kwargs": {"checkpoint_path": "x.pth"}},
    {"model_kwargs": {"drop_rate": float("nan")}},  # json writes NaN; not a plain JSON value
    {"model_kwargs": "pad_type='same'"},
    {"mean": [0.5, 0.5]},
    {"std": [0.5, 0.0, 0.5]},
    {"interpolation": "cubic-ish"},
    {"input_size": [224, 224]},
    {"num_classes": -1},
])
def test_card_fields_are_validated(tmp_path, bad):
    card = write_card(tmp_path, "mobilenetv2_035", "w.safetensors", **bad)
    with pytest.raises(BackboneError):
        load_backbone(card, pretrained=False)


def test_card_kwargs_reach_timm(tmp_path):
    card = write_card(tmp_path, "mobilenetv2_035", None, model_kwargs={"pad_type": "same", "bn_eps": 0.001})
    bb = load_backbone(card, pretrained=False)
    assert bb.model.bn1.eps == pytest.approx(1e-3)
    with pytest.raises(WeightsNotFoundError, match="names no weights"):
        load_backbone(card)
    card = write_card(tmp_path, "mobilenetv2_035", None, model_kwargs={"no_such_kwarg": 1})
    with pytest.raises(BackboneError, match="no_such_kwarg"):
        load_backbone(card, pretrained=False)


def test_spec_errors(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(tmp_path / "nope.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneError, match="backbone.json"):
        load_backbone(tmp_path / "empty")
    save_file({"a": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(BackboneError, match="weights="):
        load_backbone(tmp_path / "w.safetensors")
    with pytest.raises(ConfigError, match="pretrained=False"):
        load_backbone("resnet18", weights=tmp_path / "w.safetensors", pretrained=False)


def test_torchvision_weights_file_with_aux_heads(tmp_path):
    import torchvision

    torch.manual_seed(0)
    src = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    torch.save(src.state_dict(), tmp_path / "googlenet.pth")  # torchvision's own files hold aux1/aux2
    bb = load_backbone("googlenet", weights=tmp_path / "googlenet.pth")
    assert bb.num_classes == 1000 and bb.has_source_head
    src_sd = {k: v for k, v in src.state_dict().items() if not k.startswith(("aux1.", "aux2."))}
    assert state_equal(bb.model.state_dict(), src_sd)
    assert bb.source_logits(images(1, 64)).shape == (1, 1000)


# ----------------------------------------------------------------------- saving / pretrain dirs
def test_save_backbone_dir_round_trip(tmp_path):
    bb = random_backbone("mobilenetv2_035")
    net = bb.build_network(4)
    with torch.no_grad():
        net.head.weight.normal_()
        for p in net.body.parameters():
            p.add_(0.01)
    card_path = save_backbone_dir(net, None, None, tmp_path / "pre", source_classes=list("abcd"),
                                  source_dataset="toy")
    assert card_path.name == "backbone.json" and (tmp_path / "pre" / "weights.safetensors").is_file()
    card = json.loads(card_path.read_text())
    assert card["architecture"] == "mobilenetv2_035" and card["num_classes"] == 4
    assert not [p for p in (tmp_path / "pre").iterdir() if p.name.endswith(".tmp")]
    again = load_backbone(tmp_path / "pre")
    assert again.has_source_head and again.source_classes == list("abcd")
    assert again.preprocessing == bb.preprocessing
    x = images(2, 32)
    with torch.no_grad():
        assert torch.allclose(again.source_logits(x), net(x), atol=1e-5)
    assert torch.allclose(again.forward_layers(x, ["pool"])["pool"], net.forward_features(x), atol=1e-5)
    assert again.weights_hash != bb.weights_hash
    # a Backbone itself (here with a 1000-class source head), and without the head
    save_backbone_dir(net, None, None, tmp_path / "body", include_head=False)
    assert load_backbone(tmp_path / "body").num_classes == 0
    # card() is JSON-able and names the cut points
    text = json.dumps(again.card())
    assert '"stage5"' in text and json.loads(text)["num_features"] == 1280


def test_save_backbone_dir_torchvision(tmp_path):
    bb = random_backbone("googlenet")
    save_backbone_dir(bb.build_network(2), None, None, tmp_path / "g")
    again = load_backbone(tmp_path / "g")
    assert again.arch == "googlenet" and again.num_classes == 2
    assert [cp.name for cp in again.cut_points] == [cp.name for cp in bb.cut_points]


# ------------------------------------------------------------------- pretrained weights offline
def test_pretrained_timm_name_offline_in_process(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(WeightsNotFoundError, match="--weights FILE") as ei:
        load_backbone("resnet18")
    assert "timm/resnet18" in str(ei.value) and "card" in str(ei.value)


@pytest.mark.slow
def test_pretrained_timm_name_offline_says_how_to_use_a_local_file(tmp_path):
    # a fresh process, so huggingface_hub reads HF_HUB_OFFLINE / HF_HOME from the environment
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    code = (
        "from transferkit.backbones import load_backbone\n"
        "from transferkit.errors import WeightsNotFoundError\n"
        "try:\n    load_backbone('resnet18')\n"
        "except WeightsNotFoundError as e:\n    print('ERR', e)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    assert "ERR" in res.stdout and "--weights FILE" in res.stdout and "card" in res.stdout


def test_pretrained_without_known_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFoundError, match="--weights FILE"):
        load_backbone("alexnet")
    with pytest.raises(WeightsNotFoundError, match="backbone card"):
        load_backbone("mobilenetv1_075")


def test_available_backbones_checks_local_caches_only(tmp_path, monkeypatch):
    from huggingface_hub import constants

    hf = tmp_path / "hf" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    rows = {r["name"]: r for r in available_backbones()}
    assert {"resnet18", "resnet50", "vgg16", "inception_v3", "mobilenetv2_035", "efficientnet_b0",
            "convnext_tiny", "alexnet", "googlenet"} <= set(rows)
    assert not any(r["pretrained_available"] for r in rows.values())
    # fake HF cache entry for timm's resnet18 and a torchvision checkpoint
    repo = hf / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"x")
    # cards: a good one, one whose weights are missing, a broken one, and unrelated JSON
    ref = random_backbone("mobilenetv2_035")
    (tmp_path / "c").mkdir()
    save_file({k: v.contiguous() for k, v in ref.model.state_dict().items()}, str(tmp_path / "c" / "w.safetensors"))
    write_card(tmp_path / "c", "mobilenetv2_035", "w.safetensors")
    write_card(tmp_path / "c", "resnet18", "missing.safetensors")
    (tmp_path / "c" / "broken.json").write_text('{"architecture": "resnet18", "weights": "../x"}')
    (tmp_path / "c" / "other.json").write_text('{"hello": 1}')
    rows = available_backbones([tmp_path / "c"])
    by = {r["spec"]: r for r in rows}
    assert by["resnet18"]["pretrained_available"] and by["alexnet"]["pretrained_available"]
    assert not by["resnet50"]["pretrained_available"]
    cards = [r for r in rows if r["kind"] == "card"]
    assert all(r["weights_available"] == r["pretrained_available"] for r in rows)
    assert len(cards) == 3
    assert by[str(tmp_path / "c" / "mobilenetv2_035.json")]["pretrained_available"]
    assert not by[str(tmp_path / "c" / "resnet18.json")]["pretrained_available"]
    assert "outside" in by[str(tmp_path / "c" / "broken.json")]["error"]
