"""The built-in ``digits`` dataset: scikit-learn's 1,797 8x8 handwritten digits, scaled to 0..255."""

from __future__ import annotations

from typing import Any

import numpy as np

from .assemble import finish_arrays
from .dataset import ImageDataset


def load_digits_dataset(**kw: Any) -> ImageDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return finish_arrays(
        name="digits",
        root="sklearn.datasets.load_digits",
        images=images,
        labels=d.target.astype(np.int64),
        class_names=[str(c) for c in d.target_names.tolist()],
        sources=[f"digits#{i}" for i in range(len(images))],
        given_splits=None,
        split_origin="digits",
        where="digits",
        notes=[],
        **kw,
    )
