"""``knn`` — k-nearest neighbours by cosine similarity on the stored pooled features.

No training beyond storing the training features: each image is centred on the training mean and
L2-normalised (SimpleShot's "CL2N", Wang et al. 2019), and votes among its ``k`` most similar
training images (``_store_head.KnnHead``). ``k`` is chosen by leave-one-out accuracy on the
training rows (one similarity matrix, every k at once; ties: the larger k, whose probabilities are
smoother), unless given. The fitted model keeps the training features (safetensors) and exports to
ONNX as a similarity matmul and a top-k vote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .families import StoreHeadStrategy

K_GRID = (1, 3, 5, 7, 9, 15, 21, 31)


class KnnStrategy(StoreHeadStrategy):
    name: ClassVar[str] = "knn"
    description: ClassVar[str] = ("Frozen network; k-nearest neighbours by cosine similarity to the training "
                                  "images' pooled features (k by leave-one-out).")
    case: ClassVar[str] = "small & similar, classes in clusters"
    complexity: ClassVar[int] = 1
    defaults: ClassVar[dict[str, Any]] = {"layer": "pool", "k": None, "pool": "avg"}

    @classmethod
    def cv_candidates(cls, backbone: Any) -> list[dict[str, Any]]:
        """The final codes and the cut point before them (kNN needs features that cluster by class)."""
        names = [cp.name for cp in backbone.cut_points if cp.name not in ("stem", "pool")]
        return [{"layer": "pool"}] + ([{"layer": names[-1]}] if names else [])

    @classmethod
    def fit_arrays(cls, features: dict[str, np.ndarray], y: np.ndarray, num_classes: int, params: dict[str, Any],
                   seed: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        import torch

        from ..errors import ConfigError
        from ._store_head import FittedHead, KnnHead

        layer = params.get("layer") or "pool"
        x = np.asarray(features[layer], dtype=np.float32)
        y = np.asarray(y, dtype=np.int64)
        k = params.get("k")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1):
            raise ConfigError(f"The 'k' parameter of knn must be a positive integer. Got {k!r}; leave it unset "
                              "to choose it by leave-one-out cross-validation.")
        mean = x.mean(0)
        z = x - mean
        z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        onehot = np.eye(num_classes, dtype=np.float32)[y]
        info: dict[str, Any] = {"head": "knn", "layer": layer, "n_train": len(y)}
        if k is None:
            k, info["loo_accuracy_by_k"] = loo_best_k(z, y, num_classes)
            info["cv_accuracy"] = info["loo_accuracy_by_k"][k]
        info["k"] = int(min(k, len(y)))
        head = KnnHead(torch.from_numpy(mean), torch.from_numpy(z), torch.from_numpy(onehot), int(k))
        return FittedHead([layer], head, info)


def loo_best_k(z: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[int, dict[int, float]]:
    """The k of ``K_GRID`` (those below the row count) with the best leave-one-out accuracy of the
    vote ``KnnHead`` casts, and every k's accuracy."""
    import torch

    from ._store_head import knn_votes

    n = len(y)
    grid = [k for k in K_GRID if k < n] or [1]
    sims = torch.from_numpy(z) @ torch.from_numpy(z).T
    sims.fill_diagonal_(-float("inf"))  # an image is not its own neighbour
    top_sims, top_idx = torch.topk(sims, max(grid), dim=1)
    onehot = torch.eye(num_classes)[torch.from_numpy(y)]
    scores = {}
    for k in grid:
        votes = knn_votes(onehot[top_idx[:, :k]], top_sims[:, :k])
        scores[k] = float((votes.argmax(1).numpy() == y).mean())
    best = max(scores.values())
    return max(k for k, s in scores.items() if s == best), scores
