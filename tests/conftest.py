"""Shared test configuration.

Tests marked ``shared`` need ../shared (real weights and datasets); they are deselected by
default (pyproject addopts) and skipped with a reason when the folder is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TK_SHARED", REPO.parent / "shared"))
MOBILENET_V1_CARD = SHARED / "weights" / "mobilenetv1_075.keras_in1k.json"
MOBILENET_V2_CARD = SHARED / "weights" / "mobilenetv2_035.keras_in1k.json"

# Keep each test process to the machine's two cores and off any model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs {SHARED} (real weights and datasets)")
    for item in items:
        if "shared" in item.keywords:
            item.add_marker(skip)


@pytest.fixture()
def one_torch_thread():
    """One torch thread for this test: the 2 shared cores make a second thread several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED


# ----------------------------------------------------------------------------- tiny fixtures
def make_tiny_card(folder: Path, arch: str = "mobilenetv2_035", size: int = 32, seed: int = 0) -> Path:
    """A backbone card with random (seeded) weights for ``arch`` at ``size`` x ``size`` input."""
    import json

    import timm
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "tiny.safetensors"))
    card = {"name": f"tiny-{arch}", "architecture": arch, "model_kwargs": {}, "weights": "tiny.safetensors",
            "num_classes": 0, "input_size": [3, size, size], "interpolation": "bilinear",
            "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "source_dataset": "none (random init for tests)"}
    path = folder / "tiny.json"
    path.write_text(json.dumps(card))
    return path


def make_image_folder(root: Path, classes=("red", "green", "blue"), per_class: int = 12, size: int = 20,
                      seed: int = 0, splits: tuple[str, ...] = ()) -> Path:
    """An ImageFolder of small noisy PNGs whose class is their dominant colour (learnable, not trivial)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in splits or ("",):
        for ci, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = rng.integers(0, 60, size=(size, size, 3))
                img[..., ci % 3] += 150 + rng.integers(0, 40)
                if ci >= 3:  # more classes than channels: add a stripe pattern
                    img[:: (ci - 1), :, :] = 255
                Image.fromarray(img.clip(0, 255).astype("uint8")).save(folder / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_card(tmp_path_factory) -> Path:
    return make_tiny_card(tmp_path_factory.mktemp("card"))


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """Split tree: train/ (12 per class) and val/ (6 per class), three colour classes."""
    root = tmp_path_factory.mktemp("imgs")
    make_image_folder(root, per_class=12, splits=("train",), seed=1)
    make_image_folder(root, per_class=6, splits=("val",), seed=2)
    return root


@pytest.fixture(scope="session")
def cli():
    """The real ``transferkit`` CLI in forked child processes (see tests/cli_server.py)."""
    from cli_server import CliServer

    server = CliServer()
    yield server
    server.close()
