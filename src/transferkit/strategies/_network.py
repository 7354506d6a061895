"""Network fine-tuning: the shared code of ``partial``, ``full`` and ``scratch``.

They train with ``transferkit.engine.fit_network`` on images decoded once at the backbone's
input size; the pretrained ones start their new head at the linear probe's solution; their
fitted model (``NetworkModel``) saves the whole TransferNet as ``model.safetensors`` +
``model.json``. ``NETWORK_DEFAULTS`` are the training settings they share; each strategy's own
module overrides what makes it that strategy (``base.NETWORK_DEFAULTS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ..engine import ArrayData, Checkpointer, StartCandidate, TrainConfig, TrainResult, fit_network, predict_logits
from ..engine.data import to_input
from ..engine.freezing import reestimate_bn_statistics
from ..errors import ConfigError, DataError, StoreError
from ..io import atomic_path, atomic_write_json
from ._recipe import adabn_beats_source, resolve_bn_policy, resolve_class_weight, resolve_warmup
from .base import MODEL_CONFIG, MODEL_WEIGHTS, FitContext, FittedModel, read_model_files

if TYPE_CHECKING:
    from ..backbones import Backbone



class NetworkModel(FittedModel):
    """A whole TransferNet (normalisation, body, head) trained end to end."""

    def __init__(
        self,
        *,
        net: nn.Module,
        backbone: Backbone,
        strategy: str,
        classes: list[str],
        hidden: tuple[int, ...] = (),
        dropout: float = 0.0,
        info: dict[str, Any] | None = None,
        device: str = "auto",
    ):
        self.net = net.eval()
        self.backbone = backbone
        self.strategy = strategy
        self.classes = list(classes)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.info = dict(info or {})
        self.device = device

    def predict_logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return predict_logits(self.net, images, batch_size=batch_size, device=self.device)

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        logits = torch.from_numpy(self.predict_logits(images, batch_size))
        return torch.softmax(logits, dim=1).numpy()

    def to_module(self) -> nn.Module:
        """float/uint8 0..255 (B,3,H,W) -> logits; the TransferNet itself (fp32, eval)."""
        return self.net.float().eval()

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.net.state_dict().items()}
        with atomic_path(directory / MODEL_WEIGHTS, suffix=".safetensors") as tmp:
            save_file(state, str(tmp))
        card = self.backbone.card()
        atomic_write_json(
            directory / MODEL_CONFIG,
            {
                "kind": "network",
                "strategy": self.strategy,
                "classes": self.classes,
                "num_classes": len(self.classes),
                "hidden": list(self.hidden),
                "dropout": self.dropout,
                "backbone": {
                    k: card.get(k)
                    for k in (
                        "name",
                        "architecture",
                        "spec",
                        "weights_hash",
                        "model_kwargs",
                        "input_size",
                        "mean",
                        "std",
                        "interpolation",
                    )
                },
                "info": self.info,
            },
        )

    @classmethod
    def load(cls, directory: Path, backbone: Backbone) -> NetworkModel:
        directory = Path(directory)
        config, tensors = read_model_files(directory)
        if config.get("kind") != "network":
            raise StoreError(
                f"{directory / MODEL_CONFIG} does not describe a network model (kind "
                f"{config.get('kind')!r}); load it with the strategy that wrote it."
            )
        arch = config["backbone"].get("architecture")
        if arch != backbone.arch:
            raise StoreError(
                f"The model in {directory} was trained on a {arch!r} network but the backbone given is "
                f"{backbone.arch!r}. Point --backbone at {config['backbone'].get('spec')!r}."
            )
        net = backbone.build_network(len(config["classes"]), tuple(config["hidden"]), config["dropout"])
        try:
            net.load_state_dict(tensors)
        except RuntimeError as exc:
            raise StoreError(f"The weights in {directory / MODEL_WEIGHTS} do not fit the network: {exc}") from exc
        return cls(
            net=net,
            backbone=backbone,
            strategy=config["strategy"],
            classes=config["classes"],
            hidden=tuple(config["hidden"]),
            dropout=config["dropout"],
            info=config.get("info"),
        )


# ------------------------------------------------------------------------------------------------
# shared fitting code of the network strategies
# ------------------------------------------------------------------------------------------------
def decoded_images(ctx: FitContext, backbone: Backbone) -> np.ndarray:
    """The whole dataset as uint8 (N,3,H,W) at the backbone's input size, decoded once (cached)."""
    pre = backbone.preprocessing
    size = tuple(pre.input_size[1:])
    images = ctx.dataset.decode(size, pre.interpolation, cache_dir=ctx.cache.decoded, progress=ctx.progress)
    if len(images) != len(ctx.dataset.labels):
        raise DataError(
            f"Decoding {ctx.dataset.name!r} gave {len(images)} images for {len(ctx.dataset.labels)} "
            "labels; some images failed to decode (see dataset.skipped). Reload the dataset."
        )
    return images


def _subset(images: np.ndarray, labels: np.ndarray, idx: np.ndarray | None) -> ArrayData | None:
    if idx is None or len(idx) == 0:
        return None
    idx = np.asarray(idx, dtype=np.int64)
    return ArrayData(np.asarray(images[np.sort(idx)]), labels[np.sort(idx)])


def train_config(params: dict[str, Any], ctx: FitContext, recipe: dict[str, Any], **overrides: Any) -> TrainConfig:
    """The engine's TrainConfig from the strategy's params, with the recipe's "auto" values resolved."""
    params = dict(params)
    params.setdefault("seed", ctx.seed)
    params.setdefault("precision", ctx.precision or "auto")  # TrainConfig takes either vocabulary
    if params.get("freeze_until") is not None:
        params["freeze_stages"] = 0
    params["warmup_epochs"] = resolve_warmup(params.get("warmup_epochs", 0.0), int(params.get("epochs", 10)))
    params["class_weight"] = recipe["imbalance"]["class_weight"]
    params["selection_metric"] = recipe["imbalance"]["selection_metric"]
    params["bn_policy"] = recipe["batchnorm"]["bn_policy"]
    return TrainConfig.from_params(params, **overrides)


def fit_network_strategy(name: str, ctx: FitContext, backbone: Backbone, *, pretrained_body: bool,
                         **overrides: Any) -> NetworkModel:
    """Resolve the recipe, build the network (probe-started head), train it; ``overrides`` are the
    TrainConfig fields the strategy fixes (e.g. ``freeze_stages=0`` for full)."""
    hidden = tuple(int(h) for h in (ctx.params.get("hidden") or ()))
    dropout = float(ctx.params.get("dropout") or 0.0)
    classes = list(ctx.dataset.classes)
    images = decoded_images(ctx, backbone)
    labels = np.asarray(ctx.dataset.labels, dtype=np.int64)
    train = _subset(images, labels, ctx.train_idx)
    if train is None:
        raise DataError("No training images: the training split is empty.")
    val = _subset(images, labels, ctx.val_idx)
    monitor = _subset(images, labels, ctx.monitor_idx)
    recipe = {
        "imbalance": resolve_class_weight(ctx.params.get("class_weight", "none"), train.labels),
        "batchnorm": resolve_bn_policy(ctx.params.get("bn_policy", "eval"), pretrained=pretrained_body,
                                       backbone=backbone, images=images, train_idx=np.sort(ctx.train_idx),
                                       seed=ctx.seed, device=ctx.device),
    }
    config = train_config(ctx.params, ctx, recipe, **overrides)
    recipe["warmup"] = {"requested": ctx.params.get("warmup_epochs", 0.0), "warmup_epochs": config.warmup_epochs}
    net = backbone.build_network(len(classes), hidden, dropout)
    probe_info, start = None, None
    # Skipped only when a checkpoint will overwrite the head (and the statistics): a run killed
    # before its first checkpoint and resumed must start exactly as an uninterrupted one.
    resuming = ctx.resume and Checkpointer(ctx.run_dir).latest() is not None
    probe_start = pretrained_body and not hidden and ctx.params.get("head_init", "probe") == "probe"
    if resuming:
        recipe["batchnorm"]["note"] = ("resumed: the BatchNorm statistics and the head are the checkpoint's, as "
                                       "the interrupted run chose them")
    if probe_start and not resuming:
        probe_info, start = start_network(net, ctx, backbone, images, train, recipe)
        if val is None:  # no model selection, so no epoch-0 candidate
            start = None
        if start is not None:
            probe_info["epoch0"] = {"score": round(start.score, 6), "source": start.source}
    elif recipe["batchnorm"]["adabn"] and not resuming:  # no start to compare: the measurement decides
        recipe["batchnorm"]["layers_reestimated"] = reestimate_bn_statistics(net, train.images, device=ctx.device)
    result: TrainResult = fit_network(
        net,
        train,
        val,
        config,
        ctx.run_dir,
        monitor=monitor,
        pretrained_body=pretrained_body,
        resume=ctx.resume,
        progress=ctx.progress,
        device=ctx.device,
        history=ctx.history,
        # The pretrained network with the linear probe as its head is a candidate too (epoch 0),
        # so fine-tuning never ends below its start (see linear_start).
        start_candidate=start if start is not None else pretrained_body,
        keep_going=ctx.keep_going,
    )
    frozen = config.frozen_groups([n for n, _ in net.backbone_groups()] + ["head"], config.epochs - 1)
    info = {
        "train_config": config.to_dict(),
        "recipe": recipe,
        "frozen_groups": frozen,
        "pretrained_body": pretrained_body,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_acc": result.best_val_acc,
        "start_val_acc": result.start_val_acc,
        "selection_metric": result.selection_metric,
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from,
        "precision": result.precision,
        "events": result.events,
        "backbone_weights_hash": backbone.weights_hash,
        "head_init": probe_info or "random",
    }
    return NetworkModel(
        net=net.cpu().float().eval(),
        backbone=backbone,
        strategy=name,
        classes=classes,
        hidden=hidden,
        dropout=dropout,
        info=info,
        device=ctx.device,
    )


def start_network(net: nn.Module, ctx: FitContext, backbone: Backbone, images: np.ndarray, train: ArrayData,
                  recipe: dict[str, Any]) -> tuple[dict[str, Any], StartCandidate | None]:
    """The probe-started network (in place) and its epoch-0 candidate (``linear_start``); with AdaBN
    proposed (far statistics), the better of two.

    Both starts are a probe on the pooled features: with the source BatchNorm statistics (the
    stored features) and with statistics re-estimated on the training images. They are compared by
    the score epoch 0 carries, the cross-validated accuracy of the probe on every learnable image
    (the numbers ``auto`` compares ``linear`` and ``adabn`` by), and AdaBN, the change, is kept only
    when it is better by one standard error. Compared on the selection images instead (20 on MNIST
    at 10 per class), the train-only probes adopted AdaBN by chance and both fine-tunes ended at
    AdaBN's 82.5% held-out against ``linear``'s 85.7%; on breastmnist the re-estimated features gave
    a worse probe (0.756 against 0.827 held-out), so a far divergence alone does not decide it.
    """
    from ._probe import learnable_indices

    bn = recipe["batchnorm"]
    if bn["adabn"] and bn["requested"] == "adabn":  # asked for: no comparison
        bn["layers_reestimated"] = reestimate_bn_statistics(net, train.images, device=ctx.device)
        return _probe_start(net, ctx, backbone, images, recipe, adapted=True)
    if not bn["adabn"]:
        return _probe_start(net, ctx, backbone, images, recipe, adapted=False)
    source_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    info, start = _probe_start(net, ctx, backbone, images, recipe, adapted=False)
    kept = bn["reason"].split(":")[0] + ": AdaBN proposed, but "
    if start is None:
        bn.update(adabn=False, resolved="eval", reason=kept + "the two starts cannot be cross-validated (a class "
                  "with one learnable image), so the source statistics are kept")
        return info, start
    bn["layers_reestimated"] = reestimate_bn_statistics(net, train.images, device=ctx.device)
    adapted_info, adapted = _probe_start(net, ctx, backbone, images, recipe, adapted=True)
    adopted, margin = adabn_beats_source(start.score, None if adapted is None else adapted.score,
                                         len(learnable_indices(ctx)))
    bn["start_scores"] = {"source statistics": round(start.score, 4),
                          "re-estimated": None if adapted is None else round(adapted.score, 4),
                          "margin": round(margin, 4), "metric": f"cross-validated {info['cv_metric']} of the "
                          "linear probe on the learnable images"}
    if adopted:
        bn["reason"] += (f"; the re-estimated features' probe scores {adapted.score:.3f} in cross-validation, "
                         f"more than one standard error ({margin:.3f}) above {start.score:.3f}")
        return adapted_info, adapted
    net.load_state_dict(source_state)
    got = "no score" if adapted is None else f"{adapted.score:.3f}"
    bn.update(adabn=False, resolved="eval", layers_reestimated=0,
              reason=kept + f"its probe scores {got} in cross-validation against {start.score:.3f} with the source "
              f"statistics, not one standard error ({margin:.3f}) better, so the source statistics are kept")
    return info, start


def _probe_start(net: nn.Module, ctx: FitContext, backbone: Backbone, images: np.ndarray, recipe: dict[str, Any], *,
                 adapted: bool) -> tuple[dict[str, Any], StartCandidate | None]:
    """Start ``net``'s head at the probe on the train role and build its epoch-0 candidate, on the
    stored features or (``adapted``) on the features of ``net`` as it is now (one forward pass over
    the learnable images, which hold the train role)."""
    from ._probe import learnable_indices

    learn = learnable_indices(ctx)
    features = network_features(net, images[learn], ctx.device) if adapted else None
    train_rows = np.searchsorted(learn, np.sort(ctx.train_idx))
    class_weight = recipe["imbalance"]["class_weight"]
    info = init_head_from_probe(net, ctx, backbone, class_weight,
                                features=None if features is None else features[train_rows])
    if "probe" not in info["kind"]:
        return info, None
    return info, linear_start(net, ctx, backbone, class_weight, features)


def linear_start(net: nn.Module, ctx: FitContext, backbone: Backbone, class_weight: str,
                 features: np.ndarray | None = None) -> StartCandidate | None:
    """Epoch 0 as ``linear`` itself: the network with its head refitted as the probe on every
    learnable image (train + selection, ``linear``'s own fit), scored by that probe's
    cross-validated accuracy, in the run's selection metric; ``features``: one row per learnable
    image when the network's BatchNorm statistics were re-estimated (else the stored ones).

    Why not the probe-started network scored on the selection images: that probe was fitted on the
    train role only (at 10 images per class, 8 of them), and a few dozen selection images in bf16
    scored it below ``linear`` on 4 of 10 benchmark tasks, so a fine-tune ended up to 6 points
    below ``linear`` held-out. Training still starts from the train-only probe, so the epochs'
    selection scores stay honest; the refitted head has seen the selection images, so its score
    there would be optimistic and the cross-validated one stands in for it. ``None`` when no
    cross-validation is possible (a class with one image).
    """
    from ._probe import learnable_indices

    learn = learnable_indices(ctx)
    trained_head = {k: v.detach().clone() for k, v in net.head.state_dict().items()}
    info = init_head_from_probe(net, ctx, backbone, class_weight, features=features, indices=learn)
    state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
    net.head.load_state_dict(trained_head)
    if "cv_accuracy" not in info:
        return None
    n_val = 0 if ctx.val_idx is None else len(ctx.val_idx)
    return StartCandidate(state=state, score=float(info["cv_accuracy"]), n_val=n_val,
                          source=f"the linear probe refitted on all {len(learn)} learnable images (C={info['C']:.3g}), "
                                 f"scored by its {info['cv_metric'].replace('_', ' ')} in cross-validation")


@torch.no_grad()
def network_features(net: nn.Module, images: np.ndarray, device: str, batch_size: int = 64) -> np.ndarray:
    """Pooled features (N, D) float32 of uint8 ``images`` through ``net``'s body, eval mode, fp32."""
    from ..runtime import resolve_device

    dev = resolve_device(device)
    orig = next(net.parameters()).device
    net.to(dev).eval()
    out = [net.forward_features(to_input(torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(dev)))
           .float().cpu().numpy() for s in range(0, len(images), batch_size)]
    net.to(orig)
    return np.concatenate(out)


def init_head_from_probe(net: nn.Module, ctx: FitContext, backbone: Backbone, class_weight: str = "auto",
                         features: np.ndarray | None = None, indices: np.ndarray | None = None) -> dict[str, Any]:
    """Start the new head at the linear probe's solution (LP-FT, Kumar et al. 2022).

    The probe is solved exactly on the pooled features of the training images only, or of
    ``indices`` (cross-validated L2, the same fit as ``linear``): the stored features, or
    ``features`` (one row per sorted index) when the network's BatchNorm statistics were re-estimated and
    the stored ones no longer describe it. Its standardisation is folded into the head's weights.
    Fine-tuning then starts from the probe's accuracy instead of chance, and the body's features
    are not distorted by gradients from a random head in the first steps.
    """
    from ._probe import fit_logistic, standardiser, stored_features

    rows = np.sort(ctx.train_idx if indices is None else indices)
    x = stored_features(ctx, ["pool"]).features["pool"][rows] if features is None else features
    y = ctx.dataset.labels[rows]
    mean, scale = standardiser(x)
    try:
        probe, info = fit_logistic((x - mean) / scale, y, len(ctx.dataset.classes), ctx.seed, class_weight)
    except ConfigError as exc:  # e.g. a class with one training image: no cross-validation possible
        return {"kind": "random (no probe start)", "reason": str(exc)}
    with torch.no_grad():
        weight = probe.weight / torch.from_numpy(scale)
        bias = probe.bias - (weight * torch.from_numpy(mean)).sum(dim=1)
        net.head.weight.copy_(weight.to(net.head.weight))
        net.head.bias.copy_(bias.to(net.head.bias))
    source = "stored pool features" if features is None else "pool features with re-estimated BatchNorm statistics"
    return {"kind": f"linear probe on {source}", "C": info["C"], "cv_accuracy": info["cv_accuracy"],
            "cv_metric": info["cv_metric"], "class_weight": info["class_weight"]}
