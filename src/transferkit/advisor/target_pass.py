"""One forward pass of target images through the backbone, in eval mode.

It records, at every BatchNorm layer, the per-channel mean and variance of the layer's input
over the images (for the BN-statistics signal), the source head's softmax when the weights keep
their source classifier (for the source signal), and optionally the pooled features of some cut
points (so a subsample needs no feature store). See ``similarity`` for how these are combined.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..backbones import Backbone

# Per-channel symmetric KL is capped here before averaging, so a few channels that are
# (almost) dead on the target data cannot dominate a layer.
BN_CHANNEL_CAP = 10.0


def symmetric_kl_gaussian(m_t, v_t, m_s, v_s) -> np.ndarray:
    """Per-element symmetric KL divergence (mean of both directions) between N(m_t, v_t) and N(m_s, v_s)."""
    m_t, v_t, m_s, v_s = (np.asarray(a, dtype=np.float64) for a in (m_t, v_t, m_s, v_s))
    return 0.25 * (v_t / v_s + v_s / v_t - 2.0 + (m_t - m_s) ** 2 * (1.0 / v_t + 1.0 / v_s))


def _resolve(device: str, precision: str):
    """(torch.device, precision) as the feature store resolves them (bf16 where it is native)."""
    from ..runtime import resolve_device, resolve_precision

    dev = resolve_device(device)
    return dev, resolve_precision(precision, dev, "extract")


def _bn_groups(backbone) -> dict[int, str]:
    """id(BN module) -> parameter-group name (stem, stage1..N, top), via param_groups()."""
    import torch.nn as nn

    by_param: dict[int, str] = {}
    try:
        for name, params in backbone.param_groups():
            for p in params:
                by_param[id(p)] = name
    except Exception:  # a backbone without param_groups still gets one "all" group
        by_param = {}
    out = {}
    for module in backbone.model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            w = getattr(module, "weight", None)
            out[id(module)] = by_param.get(id(w), "other") if w is not None else "other"
    return out


def run_target_images(
    backbone: Backbone,
    images: np.ndarray,
    *,
    batch_size: int = 32,
    device: str = "auto",
    want_source: bool = True,
    layers: list[str] | None = None,
    features_out: dict[str, np.ndarray] | None = None,
    precision: str = "auto",
) -> tuple[list[dict[str, Any]] | None, np.ndarray | None, float]:
    """One pass of ``images`` (uint8 N,3,H,W) through the network in eval mode.

    Returns (per-BN-layer records or None when the network has no BatchNorm, source-head
    softmax probabilities (N, Z) or None, seconds per image). Each record: name, group,
    channels, divergence (mean capped symmetric KL between the batch statistics of the
    layer's input over all images and its running statistics).

    With ``layers`` and a ``features_out`` dict, the pooled features of those cut points are
    computed in the same pass and stored there (fp32), so a subsample needs no feature store.
    ``precision`` resolves as in the feature store (bf16 autocast where the hardware runs it
    natively); the statistics are accumulated in float64 either way.
    """
    import torch
    import torch.nn as nn

    from ..runtime import inference_context

    dev, prec = _resolve(device, precision)
    model = backbone.model
    was_training = model.training
    first = next(model.parameters(), None)
    orig_device = first.device if first is not None else torch.device("cpu")
    groups = _bn_groups(backbone)
    bns = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]
    acc: dict[str, list] = {name: [0.0, None, None] for name, _ in bns}  # count, sum, sumsq

    def make_hook(name):
        def hook(_module, args):
            x = args[0].detach()
            if x.dim() < 2:
                return
            dims = [d for d in range(x.dim()) if d != 1]
            x64 = x.double()
            cnt = x.numel() / x.shape[1]
            s = x64.sum(dim=dims)
            s2 = (x64 * x64).sum(dim=dims)
            rec = acc[name]
            rec[0] += cnt
            rec[1] = s if rec[1] is None else rec[1] + s
            rec[2] = s2 if rec[2] is None else rec[2] + s2

        return hook

    handles = [m.register_forward_pre_hook(make_hook(name)) for name, m in bns]
    probs = []
    feats: dict[str, list[np.ndarray]] = {name: [] for name in (layers or [])}
    want_source = want_source and bool(getattr(backbone, "has_source_head", False))
    t0 = time.perf_counter()
    try:
        model.eval()
        model.to(device=dev, memory_format=torch.channels_last)
        with inference_context(dev, prec):
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(np.array(images[start : start + batch_size], copy=True)).to(dev)
                x = x.contiguous(memory_format=torch.channels_last)
                # The same images twice (features, then source head) leave the BN means and
                # variances unchanged: sums and counts both double.
                if layers:
                    out = backbone.forward_layers(x, list(layers))
                    for name in layers:
                        feats[name].append(out[name].float().cpu().numpy())
                if want_source:
                    logits = backbone.source_logits(x)
                    probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
                elif not layers:
                    backbone.forward_layers(x, [backbone.cut_points[-1].name])
    finally:
        for h in handles:
            h.remove()
        model.to(device=orig_device, memory_format=torch.contiguous_format)
        model.train(was_training)
    per_image = (time.perf_counter() - t0) / max(len(images), 1)

    records = None
    if bns:
        records = []
        for name, m in bns:
            cnt, s, s2 = acc[name]
            if s is None or cnt == 0:
                continue
            mean = (s / cnt).cpu().numpy()
            var = np.clip((s2 / cnt).cpu().numpy() - mean**2, 0.0, None)
            eps = float(getattr(m, "eps", 1e-5))
            j = symmetric_kl_gaussian(
                mean, var + eps, m.running_mean.detach().cpu().numpy(), m.running_var.detach().cpu().numpy() + eps
            )
            j = np.minimum(np.nan_to_num(j, nan=BN_CHANNEL_CAP, posinf=BN_CHANNEL_CAP), BN_CHANNEL_CAP)
            records.append(
                {"name": name, "group": groups.get(id(m), "other"), "channels": int(mean.size),
                 "divergence": float(j.mean())}
            )
    source_probs = np.concatenate(probs) if probs else None
    if features_out is not None:
        for name, parts in feats.items():
            features_out[name] = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return records, source_probs, per_image
