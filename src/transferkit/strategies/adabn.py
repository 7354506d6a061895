"""``adabn`` — the linear probe on features of the backbone with BatchNorm re-estimated on the target (AdaBN).

Li et al. 2016 ("Revisiting batch normalization for practical domain adaptation"): a network's
BatchNorm statistics describe the source data; replacing them with the target data's moves the
features toward a domain-normalised form at the cost of one forward pass and no training. Here
every BatchNorm's running mean and variance are re-estimated on the *learnable* images (train +
selection; never the scored ones), in a seeded random order (batches mixing the classes) with a
cumulative average over batches (``torch.optim.swa_utils.update_bn``'s way), the rest of the
network in eval mode. Then the linear probe on the adapted features at ``layer`` (default: the cut
point with the best cross-validated probe accuracy, as ``intermediate`` chooses it).

The adapted statistics are cached in ``<cache>/features/adabn/<identity>.safetensors``; the
identity (source weights, dataset fingerprint, the exact image indices, method version) is part of
the adapted backbone's ``weights_hash``, so its features have their own store keys. The fitted
model saves the statistics with the head and refuses other source weights on reload.

Under ``auto``'s cross-validation the statistics are estimated on every learnable image, the
validation folds included: those images' pixels (never their labels) shape the features, as they
would at ``fit``, so the fold score is what the fit gets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .base import FitContext, FittedModel
from .families import StoreHeadStrategy
from .intermediate import IntermediateStrategy

if TYPE_CHECKING:
    from ..backbones import Backbone

ADABN_VERSION = 2
BN_BATCH = 32


class AdaBNStrategy(StoreHeadStrategy):
    name: ClassVar[str] = "adabn"
    description: ClassVar[str] = ("Frozen network with its BatchNorm statistics re-estimated on the training "
                                  "images (AdaBN); logistic regression at the best cut point.")
    case: ClassVar[str] = "small & different"
    complexity: ClassVar[int] = 2
    own_forward_pass: ClassVar[bool] = True
    # Its adapted statistics depend on the training images: a sweep over data sizes and draws would
    # pay a forward pass of the dataset per fit. It lost to linear on every task measured
    # (benchmarks/candidates.py), so compare and the demo leave it out unless asked.
    compared_by_default: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {"layer": None, "pool": "avg"}

    @classmethod
    def cv_candidates(cls, backbone: Any) -> list[dict[str, Any]]:
        """One per cut point but the stem; none for a backbone without BatchNorm (nothing to adapt)."""
        from ._store_head import is_batchnorm

        if not any(is_batchnorm(m) for m in backbone.model.modules()):
            return []
        return [{"layer": cp.name} for cp in backbone.cut_points if cp.name != "stem"]

    @classmethod
    def candidate_layers(cls, backbone: Any, params: dict[str, Any]) -> list[str]:
        return IntermediateStrategy.candidate_layers(backbone, params)

    @classmethod
    def candidate_features(cls, ctx: FitContext, params: dict[str, Any]) -> dict[str, np.ndarray]:
        """The adapted network's features of the learnable and monitored images only (NaN in the
        other rows): that network exists for this training set alone, and the rest of the dataset
        can be most of it (MNIST at 30 per class: 300 learnable images, 2,000 held out)."""
        from ..features import extract_features
        from ._probe import learnable_indices

        adapted, _ = adapted_backbone(ctx)
        rows = learnable_indices(ctx)
        if ctx.monitor_idx is not None and len(ctx.monitor_idx):
            rows = np.union1d(rows, ctx.monitor_idx)
        whole = len(rows) == len(ctx.dataset)
        wanted = cls.candidate_layers(ctx.backbone, params)
        # Every cut point in the one pass (``auto`` scores each; the store keeps them for the next call).
        layers = list(dict.fromkeys(cls.candidate_layers(ctx.backbone, {}) + wanted))
        feats = extract_features(adapted, ctx.dataset if whole else ctx.dataset.subset(rows), layers,
                                 store_dir=ctx.cache.features, device=ctx.device, precision=ctx.precision,
                                 pool=params.get("pool", "avg"), progress=ctx.progress).features
        feats = {name: feats[name] for name in wanted}
        if whole:
            return feats
        out = {}
        for name, v in feats.items():
            out[name] = np.full((len(ctx.dataset), *v.shape[1:]), np.nan, dtype=v.dtype)
            out[name][rows] = v
        return out

    @classmethod
    def plain_probe(cls, params: dict[str, Any]) -> bool:
        return IntermediateStrategy.plain_probe(params)

    @classmethod
    def fit_arrays(cls, features: dict[str, np.ndarray], y: np.ndarray, num_classes: int, params: dict[str, Any],
                   seed: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        return IntermediateStrategy.fit_arrays(features, y, num_classes, params, seed)

    def fit(self, ctx: FitContext) -> FittedModel:
        from ..errors import ConfigError
        if not self.cv_candidates(ctx.backbone):
            raise ConfigError(f"Backbone {ctx.backbone.name!r} has no BatchNorm layers, so adabn would be the "
                              "'intermediate' strategy; use that one.")
        adapted, adaptation = adapted_backbone(ctx)
        model = self.fit_store_head(ctx, {**self.defaults, **ctx.params}, adaptation=adaptation,
                                    feature_backbone=adapted)
        model.info["adaptation"] = adaptation
        return model


def adapted_backbone(ctx: FitContext) -> tuple[Backbone, dict[str, Any]]:
    """``ctx.backbone`` with every BatchNorm's statistics re-estimated on the learnable images (cached
    on disk by the adaptation's identity), and that identity."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    from ..io import atomic_path, sha256_json
    from ._probe import learnable_indices
    from ._store_head import with_batchnorm_state

    idx = learnable_indices(ctx)
    identity = {"method": f"adabn/{ADABN_VERSION}", "source_weights_hash": str(ctx.backbone.weights_hash),
                "dataset": str(ctx.dataset.fingerprint), "n_images": len(idx), "batch": BN_BATCH, "seed": ctx.seed,
                "images_sha256": hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()}
    key = sha256_json(identity)
    adaptation = {"weights_hash": f"{ctx.backbone.weights_hash}+adabn-{key[:16]}", "identity": identity}
    path = ctx.cache.features / "adabn" / f"{key}.safetensors"
    state = None
    if path.is_file():
        try:
            state = load_file(str(path))
        except (OSError, SafetensorError):
            state = None  # unreadable: estimated again and replaced
    if state is None:
        state = estimate_batchnorm(ctx.backbone, _images(ctx), idx, seed=ctx.seed, device=ctx.device)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".safetensors") as tmp:
            save_file(state, str(tmp))
    return with_batchnorm_state(ctx.backbone, state, adaptation["weights_hash"]), adaptation


def _images(ctx: FitContext) -> np.ndarray:
    from ..errors import DataError

    pre = ctx.backbone.preprocessing
    images = ctx.dataset.decode(tuple(pre.input_size[1:]), pre.interpolation, cache_dir=ctx.cache.decoded,
                                progress=ctx.progress)
    if len(images) != len(ctx.dataset.labels):
        raise DataError(f"Decoding {ctx.dataset.name!r} gave {len(images)} images for {len(ctx.dataset.labels)} "
                        "labels; some images failed to decode (see dataset.skipped). Reload the dataset.")
    return images


def estimate_batchnorm(backbone: Backbone, images: np.ndarray, idx: np.ndarray, *, seed: int = 0,
                       device: str = "auto", batch_size: int = BN_BATCH) -> dict[str, Any]:
    """Every BatchNorm's running statistics estimated on ``images[idx]`` (uint8 N x 3 x H x W).

    A copy of the network runs with only its BatchNorm layers in training mode and momentum None
    (an equal-weight average over batches), on batches of nearly equal size (at most ``batch_size``)
    in a seeded random order, so each batch mixes the classes.
    """
    import copy

    import torch

    from ..errors import DataError
    from ..runtime import resolve_device
    from ._store_head import batchnorm_state, is_batchnorm

    if len(idx) < 2:
        raise DataError(f"AdaBN needs at least 2 training images to estimate BatchNorm statistics; got {len(idx)}.")
    work = copy.deepcopy(backbone)
    work.model.to(resolve_device(device)).eval()
    bns = [m for m in work.model.modules() if is_batchnorm(m)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    order = np.asarray(idx)[np.random.default_rng(seed).permutation(len(idx))]
    # Batches of (nearly) equal size, so the equal-weight average over batches is the average over images.
    batches = np.array_split(order, -(-len(order) // batch_size))
    last = work.cut_points[-1].name  # the forward pass reaches every BatchNorm before the head
    with torch.no_grad():
        for batch in batches:
            batch = np.sort(batch)  # sorted: sequential reads of a memory-mapped cache
            work.forward_layers(torch.from_numpy(np.ascontiguousarray(images[batch])), [last])
    return batchnorm_state(work.model)
