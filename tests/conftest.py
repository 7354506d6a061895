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


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED
